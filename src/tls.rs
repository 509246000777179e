//! One rustls crypto provider (ring) for kube and reqwest alike; two would make rustls panic.

/// Installs ring as the process-wide provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
