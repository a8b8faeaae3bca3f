//! The machine and the NATS and PostgreSQL versions the report names, so
//! that its figures can be read in context.

use sluice_devkit::Sandbox;

pub fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let memory = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or("?".to_owned(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1_048_576.0)
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores ({cpu}), {memory} RAM, Linux {}",
        read("/proc/sys/kernel/osrelease").trim()
    )
}

pub async fn versions() -> (String, String) {
    let nats = match async_nats::connect(sluice_devkit::sandbox::nats_url()).await {
        Ok(client) => client.server_info().version,
        Err(_) => "?".into(),
    };
    let pg = match Sandbox::create("bench-version").await {
        Ok(sandbox) => sandbox
            .db()
            .await
            .query_one(
                "SELECT current_setting('server_version') || ' (fsync ' || current_setting('fsync')
                        || ', synchronous_commit ' || current_setting('synchronous_commit') || ')'",
                &[],
            )
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default(),
        Err(_) => "?".into(),
    };
    (nats, pg)
}
