//! Shared fixtures.

use gitlab_emulator::GitLabEmulator;

/// An emulator seeded with every role (`gitlab_emulator::fixtures::seed`).
pub async fn emulator() -> GitLabEmulator {
    GitLabEmulator::start(&gitlab_emulator::fixtures::seed())
        .await
        .expect("emulator starts")
}

/// Polls `f` every 200 ms until it answers Some, or `limit` passes (then None).
pub async fn wait_until<T, F, Fut>(limit: std::time::Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
