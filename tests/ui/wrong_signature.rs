use durable::{workflow, Data, StepError};

async fn takes_u32(n: u32) -> Result<u32, StepError> {
    Ok(n)
}

async fn returns_data(data: Data) -> Data {
    data
}

fn not_async(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

async fn string_error(data: Data) -> Result<Data, String> {
    Ok(data)
}

async fn not_send(data: Data) -> Result<Data, StepError> {
    let rc = std::rc::Rc::new(());
    std::future::ready(()).await;
    drop(rc);
    Ok(data)
}

workflow! {
    onboard {
        step takes_u32;
        step returns_data;
        step sync = not_async;
        step string_error;
        step not_send;
    }
}

fn main() {}
