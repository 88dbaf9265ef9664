//! One cancellation token for the whole process, cancelled by SIGTERM or Ctrl-C. A second
//! signal while draining exits at once, for an operator who does not want to wait.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM / SIGINT and exits the process on the second.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections or claims; finishing in-flight work");
        token.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without waiting for in-flight work");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
