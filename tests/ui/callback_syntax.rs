use durable::workflow;

workflow! {
    payment {
        callback paid(timeout = 1d) = request_payment;
        callback refunded;
        callback settled = ;
    }
}

fn main() {}
