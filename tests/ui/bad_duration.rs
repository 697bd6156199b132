use durable::workflow;

workflow! {
    onboard {
        step a(retry(max_attempts = 3, initial = 500));
        step b(retry(max_attempts = 3, initial = 5x));
        step c(retry(max_attempts = 3, max_interval = soon));
        step d(retry(max_attempts = 3, initial = 0.5ms));
        step e(retry(max_attempts = 3, max_interval = 5 s));
        step f(retry(max_attempts = 3, initial = 5sec));
        step g(retry(max_attempts = 3, initial = -5s));
        step h(timeout = 2 seconds);
        step i(timeout = 3 days);
        sleep cool_down(for = 2 weeks);
    }
}

fn main() {}
