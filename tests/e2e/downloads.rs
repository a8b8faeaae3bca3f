//! How many downloads each host gets at once, against the devkit's real
//! HTTP server: a fast host is raised, one that refuses or slows down is
//! cut within seconds, and a slow host never holds another's downloads.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sluice_download::{DownloadOptions, Downloader, Networks, Row};
use sluice_e2e::{FileServer, Route};

/// A downloader that may reach this machine, with the default limits.
fn downloader() -> Downloader {
    let mut options = DownloadOptions::default();
    options.addresses.allow = Networks::parse("127.0.0.0/8").unwrap();
    Downloader::new(&options).unwrap()
}

/// `workers` tasks downloading `url` whole over and over until `stop`;
/// each download counted in `done`.
fn hammer(
    downloader: &Downloader,
    url: String,
    workers: usize,
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicUsize>,
) {
    for _ in 0..workers {
        let (downloader, url, stop, done) =
            (downloader.clone(), url.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut file) = downloader.open(&url, None, &["id"]).await {
                    while let Ok(Some(row)) = file.next_row().await {
                        assert!(matches!(row, Row::Record(_)));
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Waits up to `within` for `host`'s limit to satisfy `ok`; the limit.
async fn limit_until(
    downloader: &Downloader,
    host: &str,
    within: Duration,
    ok: impl Fn(usize) -> bool,
) -> usize {
    let started = Instant::now();
    loop {
        let limit = downloader.host_limit(host);
        if ok(limit) || started.elapsed() > within {
            return limit;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn host_of(server: &FileServer) -> String {
    let url = sluice_download::Url::parse(&server.url("/")).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
}

#[tokio::test]
async fn a_fast_host_is_raised_and_one_that_refuses_or_slows_down_is_cut() {
    let server = FileServer::start().await.unwrap();
    let host = host_of(&server);
    let body = "id\n1\n2\n3\n";
    server.set(
        "/f.csv",
        Route::new(body).first_byte_after(Duration::from_millis(5)),
    );
    let downloader = downloader();
    assert_eq!(downloader.host_limit(&host), 4, "every host starts at 4");
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::default());
    hammer(&downloader, server.url("/f.csv"), 32, &stop, &done);

    let raised = limit_until(&downloader, &host, Duration::from_secs(5), |l| l >= 16).await;
    assert!(
        raised >= 16,
        "a fast host reached only {raised} downloads at once"
    );

    // It starts refusing: cut to the floor within seconds.
    server.set("/f.csv", Route::new(body).fail_first(503, 1_000_000));
    let cut = limit_until(&downloader, &host, Duration::from_secs(5), |l| l <= 2).await;
    assert!(
        cut <= 2,
        "a refusing host still has {cut} downloads at once"
    );

    // It answers again, fast: raised again; then ten times slower: cut.
    server.set(
        "/f.csv",
        Route::new(body).first_byte_after(Duration::from_millis(10)),
    );
    let raised = limit_until(&downloader, &host, Duration::from_secs(10), |l| l >= 12).await;
    assert!(raised >= 12, "a recovered host reached only {raised}");
    server.set(
        "/f.csv",
        Route::new(body).first_byte_after(Duration::from_millis(100)),
    );
    let cut = limit_until(&downloader, &host, Duration::from_secs(5), |l| {
        l <= raised / 2
    })
    .await;
    assert!(
        cut <= raised / 2,
        "a host ten times slower kept {cut} of {raised}"
    );
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test]
async fn a_slow_host_never_holds_the_downloads_of_another() {
    let (slow, fast) = (
        FileServer::start().await.unwrap(),
        FileServer::start().await.unwrap(),
    );
    slow.set(
        "/f.csv",
        Route::new("id\n1\n").first_byte_after(Duration::from_secs(2)),
    );
    fast.set("/f.csv", Route::new("id\n1\n"));
    let downloader = downloader();
    let stop = Arc::new(AtomicBool::new(false));
    let (slow_done, fast_done) = (Arc::default(), Arc::<AtomicUsize>::default());
    // More downloads waiting on the slow host than it may have at once.
    hammer(&downloader, slow.url("/f.csv"), 16, &stop, &slow_done);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    hammer(&downloader, fast.url("/f.csv"), 4, &stop, &fast_done);
    while fast_done.load(Ordering::Relaxed) < 100 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fast_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(
        fast_done.load(Ordering::Relaxed) >= 100,
        "the fast host got {} downloads in {fast_took:?} beside a slow one",
        fast_done.load(Ordering::Relaxed)
    );
}
