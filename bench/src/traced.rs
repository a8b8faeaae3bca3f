//! What tracing costs: the main mode with every span exported to a real
//! Jaeger against the same without, and the span count of one import.

use sluice_devkit::Dataset;

use crate::files::Files;

use crate::pipeline::{run_pipeline, PipelineRun};

/// What tracing costs: the main mode twice with every span exported to a
/// real Jaeger and once more without, alternating with the main run so
/// that drift on a busy machine weighs on both sides alike.
pub struct TracedRuns {
    /// Rows per second with every span exported, and without.
    pub traced: f64,
    pub untraced: f64,
    /// Spans in the trace of one import of the data set.
    pub spans: usize,
}

pub async fn traced_runs(
    server: &Files,
    data: &Dataset,
    per_message: u32,
    main: &PipelineRun,
) -> Result<TracedRuns, String> {
    let jaeger = sluice_devkit::jaeger::Jaeger::start(
        std::path::Path::new(".local/bin/jaeger"),
        std::path::Path::new("deploy/local/jaeger/config.yaml"),
    )
    .map_err(|e| format!("{e:#}"))?;
    let endpoint = jaeger.otlp_endpoint();
    let traced_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ];
    let (mut traced, mut untraced) = (Vec::new(), vec![main.rate()]);
    for round in 0..2 {
        eprintln!(
            "sluice, every span exported to Jaeger (round {})…",
            round + 1
        );
        traced.push(
            run_pipeline(server, &[(data, "/main")], per_message, 1, &traced_env)
                .await?
                .rate(),
        );
        if round == 0 {
            eprintln!("sluice, untraced again…");
            untraced.push(
                run_pipeline(server, &[(data, "/main")], per_message, 1, &[])
                    .await?
                    .rate(),
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(TracedRuns {
        traced: mean(&traced),
        untraced: mean(&untraced),
        spans: spans_of_one_import(&jaeger).await?,
    })
}

/// The span count of the last trace the importer took part in.
async fn spans_of_one_import(jaeger: &sluice_devkit::jaeger::Jaeger) -> Result<usize, String> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", jaeger.query_url());
        async move {
            http.get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("Jaeger query failed: {e}"))?
                .bytes()
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
                })
        }
    };
    let recent = get("/api/traces?service=sluice-importer&limit=1".into()).await?;
    let id = recent["data"][0]["traceID"]
        .as_str()
        .ok_or("Jaeger holds no trace of the importer")?
        .to_owned();
    let trace = get(format!("/api/traces/{id}")).await?;
    Ok(trace["data"][0]["spans"].as_array().map_or(0, Vec::len))
}
