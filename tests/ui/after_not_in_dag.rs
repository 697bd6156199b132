use durable::workflow;

workflow! {
    onboard {
        step create_user;
        dag {
            step bill(after = [create_user]);
            seq shipping {
                step pack;
                step ship;
            }
            parallel {
                step email;
                step sms;
            }
            step archive(after = [ship, sms, parallel]);
        }
    }
}

fn main() {}
