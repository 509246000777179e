//! Starts only the local Kubernetes API (for trying kubectl against it):
//! `cargo run --example kube-api -- /tmp/kubeconfig`, then `KUBECONFIG=/tmp/kubeconfig kubectl ...`.

#[tokio::main]
async fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "kubeconfig".into());
    let server =
        kube_local::KubeApiServer::start_with("127.0.0.1:0", std::time::Duration::from_secs(5))
            .await
            .expect("start");
    server
        .write_kubeconfig(std::path::Path::new(&path))
        .expect("write kubeconfig");
    println!(
        "local Kubernetes API on {}; kubeconfig written to {path}",
        server.url()
    );
    let _ = tokio::signal::ctrl_c().await;
}
