//! Wall-clock time in milliseconds, as the journal stores it.
//!
//! # Time in tests
//!
//! The wall clock follows tokio's clock: under a paused tokio clock (`tokio::time::pause`,
//! `#[tokio::test(start_paused = true)]`, which needs tokio's `test-util` feature) it moves
//! with tokio's virtual time, so a test that sleeps an hour on the paused clock sees journal
//! times, due sleeps (`sleep NAME(for = 1h)`), retry backoffs and leases an hour later, without
//! sleeping for real. Unpaused, tokio's clock is the system's monotonic clock read at the same
//! moment, so the offset is nil and this is the system's wall clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the system's wall clock, moved by how far a paused
/// tokio clock has been advanced (see the module's documentation).
pub fn now_millis() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Unpaused, tokio reads the same monotonic clock: the two readings are nanoseconds apart.
    let (tokio_now, real_now) = (tokio::time::Instant::now().into_std(), Instant::now());
    let wall = match tokio_now.checked_duration_since(real_now) {
        Some(ahead) => wall + ahead,
        None => wall.saturating_sub(real_now.duration_since(tokio_now)),
    };
    wall.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::now_millis;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_wall_clock_moves_with_a_paused_tokio_clock() {
        let before = now_millis();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let after = now_millis();
        // An hour of virtual time passed, and (nearly) none of real time.
        assert!(
            (3_600_000..3_605_000).contains(&(after - before)),
            "{}",
            after - before
        );
    }
}
