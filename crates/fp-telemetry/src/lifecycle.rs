//! Process lifecycle shared by the queue workers.

/// Resolves on Ctrl-C or SIGTERM (what orchestrators and `make run` send), so a worker can stop
/// consuming and drain before it exits.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}
