//! The REST gateway against its own OpenAPI document (`docs/openapi.json`),
//! by schemathesis: generated valid and invalid requests for every operation,
//! then chains of create → fetch / validate / list / update / deactivate
//! through the document's links. It fails on any 5xx, on a response that the
//! document does not describe (status code, body schema, content type,
//! headers), on invalid input that is accepted, and on a /v2 route that
//! answers without a valid token.
//!
//! schemathesis is a Python tool: `scripts/schemathesis-venv` (run by
//! `scripts/test`) installs the pinned version into `target/schemathesis-venv`.
//! The run is deterministic (fixed seed, one worker, no example database);
//! everything it writes stays under `target/schemathesis-run`, where
//! `output.txt` keeps the last run's report.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{TestServer, acme_token};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What must hold for every request and response.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      negative_data_rejection,ignored_auth";

/// Test cases per operation and phase: the whole run takes about 15 s alone
/// on 2 cores. A different number (or seed, or document) draws other cases.
const MAX_EXAMPLES: &str = "50";
const SEED: &str = "1";

/// A run that has not finished by then is stopped and fails the test.
const DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_gateway_conforms_to_its_openapi_document() {
    let schemathesis = Path::new(ROOT).join("target/schemathesis-venv/bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run ./scripts/test (or ./scripts/schemathesis-venv) once to install it",
        schemathesis.display()
    );
    let work = Path::new(ROOT).join("target/schemathesis-run");
    // A fresh directory each run: nothing from an earlier run is replayed.
    match fs::remove_dir_all(&work) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot clear {}: {e}", work.display()),
    }
    fs::create_dir_all(&work).unwrap_or_else(|e| panic!("cannot create {}: {e}", work.display()));

    let server = TestServer::start().await;
    let base = server.url();
    let token = acme_token();
    let args = arguments(&base, &token);
    let log = work.join("output.txt");

    let outcome = tokio::task::spawn_blocking({
        let (args, work, log) = (args.clone(), work.clone(), log.clone());
        move || run(&schemathesis, &args, &work, &log)
    })
    .await
    .expect("the schemathesis runner thread does not panic");
    server.stop().await;

    let output = fs::read_to_string(&log)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    let shown = args.join(" ").replace(&token, "<acme token>");
    match outcome {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "schemathesis found problems ({status}); the report is below and in {}\n\
             command: schemathesis {shown}\n\n{output}",
            log.display()
        ),
        Err(problem) => panic!("{problem}\ncommand: schemathesis {shown}\n\n{output}"),
    }
}

/// The command line after `schemathesis`.
fn arguments(base: &str, token: &str) -> Vec<String> {
    vec![
        "--no-color".into(),
        "run".into(),
        format!("{base}/openapi.json"),
        "--url".into(),
        base.into(),
        "--header".into(),
        format!("Authorization: {token}"),
        "--checks".into(),
        CHECKS.into(),
        "--phases".into(),
        "examples,coverage,fuzzing,stateful".into(),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        "--seed".into(),
        SEED.into(),
        "--workers".into(),
        "1".into(),
        "--generation-database".into(),
        "none".into(),
        "--suppress-health-check".into(),
        "all".into(),
        "--request-timeout".into(),
        "10".into(),
    ]
}

/// Runs schemathesis in `work` with its output in `log`, stopping it at the
/// deadline.
fn run(program: &Path, args: &[String], work: &Path, log: &Path) -> Result<ExitStatus, String> {
    let out = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("NO_COLOR", "1")
        .env("HYPOTHESIS_STORAGE_DIRECTORY", work.join(".hypothesis"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for proxy in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(proxy);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "schemathesis did not finish within {} s and was stopped; its output so far is below",
                    DEADLINE.as_secs()
                ));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for schemathesis: {e}"));
            }
        }
    }
}
