//! LISTEN on a dedicated connection (never a pooled one): a NOTIFY on the schema's channel
//! (a run was queued, leases were released) wakes the engine's claimer at once.
//!
//! NOTIFY is only a hint: the engine claims on a timer too, so a notification lost while the
//! listener reconnects delays a pickup, never loses a run. After every (re)connect the
//! listener wakes the claimer once, to sweep what was missed.

use std::future::poll_fn;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::Inner;

/// How often the listener checks its connection is alive (and the store still in use).
const PING: Duration = Duration::from_secs(5);

pub(crate) async fn listen(store: Weak<Inner>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(inner) = store.upgrade() else { return };
        let config = inner.config.clone();
        let channel = inner.sql.channel.clone();
        drop(inner);
        if listen_once(&store, &config, &channel).await {
            pause = Duration::from_millis(100);
        }
        if store.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Listens until the connection fails or the store is dropped; true if it got as far as
/// listening.
async fn listen_once(store: &Weak<Inner>, config: &tokio_postgres::Config, channel: &str) -> bool {
    let Ok((client, mut connection)) = config.connect(NoTls).await else {
        return false;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let listening = client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .is_ok();
    if listening {
        // Sweep whatever was queued while nobody listened.
        match store.upgrade() {
            Some(inner) => inner.work.bump(),
            None => {
                driver.abort();
                return true;
            }
        }
        loop {
            tokio::select! {
                message = rx.recv() => {
                    let Some(()) = message else { break };
                    match store.upgrade() {
                        Some(inner) => inner.work.bump(),
                        None => break,
                    }
                }
                () = tokio::time::sleep(PING) => {
                    if store.strong_count() == 0 {
                        break;
                    }
                    let ping = tokio::time::timeout(PING, client.simple_query("")).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
    }
    driver.abort();
    listening
}
