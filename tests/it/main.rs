//! One integration-test binary (link time is precious on 2 cores): CRDs and examples, the
//! GitLab emulator's fidelity, and the GitLab client against the emulator.

mod admission;
mod chart;
mod client;
mod cluster;
mod crds;
mod faults;
mod kubectl;
mod node;
mod operator;
mod preview;
mod process;
mod rbac;
mod real;
mod reasons;
mod sandbox;
mod support;
