//! Log set-up: JSON lines outside dev mode, human-readable in dev; always to stderr so
//! stdout stays clean for `--json` output.

use tracing_subscriber::EnvFilter;

pub fn init(format: Option<&str>, dev: bool) {
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=warn"));
    let json = match format {
        Some("json") => true,
        Some("pretty") => false,
        _ => !dev,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    install_panic_hook();
}

/// Panics are logged with their location only: a panic message can carry request data
/// (a number, a body), which must never reach a log line.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(location = %location, "panic");
    }));
}
