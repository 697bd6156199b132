use durable::workflow;

workflow! {
    onboard {
        dag {
            step create_user;
            step send_welcome(after = [create_usr]);
            step set_up_billing(after = [create_user, provision]);
        }
    }
}

fn main() {}
