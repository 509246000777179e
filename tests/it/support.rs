//! Shared fixtures.

use gitlab_emulator::GitLabEmulator;

/// An emulator seeded with every role (`gitlab_emulator::fixtures::seed`).
pub async fn emulator() -> GitLabEmulator {
    GitLabEmulator::start(&gitlab_emulator::fixtures::seed())
        .await
        .expect("emulator starts")
}
