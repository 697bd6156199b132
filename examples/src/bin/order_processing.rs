//! The orchwf e-commerce order as a `dag`: each step starts as soon as the steps it comes
//! after have finished, so the whole order takes about as long as its critical path
//! (validate -> check inventory -> reserve -> ship -> email: 750 ms), not the sum of its steps
//! (1050 ms). Also shows the order's step graph: printed as Mermaid, or, given a directory,
//! written there as Mermaid (`order_processing.mmd`) and Graphviz (`order_processing.dot`)
//! picture sources.
//!
//! `cargo run --bin order_processing [DIR]`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use durable::store::memory::MemoryStore;
use durable::{workflow, Data, Engine, StepContext, StepError, Workflow};
use durable_examples::{exit, finished, say, scaled, started, work};

/// Pretends to call the service behind each step for as long as orchwf's example does.
async fn call(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    started(&ctx);
    let millis = match ctx.step() {
        "validate_order" => 100,
        "check_inventory" => 200,
        "process_payment" => 300,
        "reserve_inventory" => 150,
        "create_shipment" => 200,
        _ => 100,
    };
    work(Duration::from_millis(millis)).await;
    finished(&ctx);
    Ok(data.assign(ctx.step(), "done"))
}

workflow! {
    /// orchwf's complete e-commerce example.
    pub order_processing {
        dag {
            step validate_order = call;
            step check_inventory(after = [validate_order], retry(max_attempts = 3, initial = 100ms)) = call;
            step process_payment(after = [validate_order], retry(max_attempts = 3, initial = 100ms)) = call;
            step reserve_inventory(after = [check_inventory]) = call;
            step create_shipment(after = [process_payment, reserve_inventory]) = call;
            step send_email(after = [create_shipment], optional) = call;
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let definition = order_processing.definition();
    match std::env::args_os().nth(1).map(std::path::PathBuf::from) {
        Some(dir) => {
            std::fs::write(dir.join("order_processing.mmd"), definition.to_mermaid())?;
            std::fs::write(dir.join("order_processing.dot"), definition.to_dot())?;
            say(format!(
                "wrote {0}/order_processing.mmd and {0}/order_processing.dot",
                dir.display()
            ));
        }
        None => {
            say("the order's step graph as Mermaid (give a directory to write .mmd and .dot files):");
            println!("{}", definition.to_mermaid());
        }
    }

    let engine = Engine::builder(MemoryStore::new())
        .register(order_processing)
        .build()
        .await?;
    let begun = Instant::now();
    let out = engine
        .run(
            order_processing,
            Data::new().assign("order_id", "order_123"),
        )
        .await?;
    let took = begun.elapsed();
    say(format!("order processed: {}", serde_json::Value::from(out)));
    let ms = |millis| scaled(Duration::from_millis(millis)).as_millis();
    say(format!(
        "took {} ms: the critical path is {} ms, the sum of all steps {} ms",
        took.as_millis(),
        ms(750),
        ms(1050)
    ));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    exit(run().await)
}
