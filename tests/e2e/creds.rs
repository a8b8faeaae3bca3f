//! sluice on a NATS in operator mode (decentralized JWT authentication):
//! the server trusts an operator, knows accounts by their JWTs, and lets in
//! a user who shows a JWT its account signed and proves it holds the key.
//! The services log in with a credentials file (`SLUICE_NATS_CREDS`), the
//! one `nats --creds` takes.

use nkeys::KeyPair;
use sluice_devkit::{sandbox::admin_database_url, unique_suffix, Dataset, Sandbox};
use sluice_e2e::{nats_jwt, sluice_with_only, Pipeline, PrivateNats};

/// A nats-server config that trusts `operator` and knows `accounts` (public
/// key and JWT) from the config alone: `resolver: MEMORY` fetches nothing.
fn operator_mode_config(
    operator: &KeyPair,
    system: &KeyPair,
    accounts: &[(String, String)],
) -> String {
    let preload: String = accounts
        .iter()
        .map(|(key, jwt)| format!("  {key}: \"{jwt}\"\n"))
        .collect();
    // The store is PrivateNats' `-sd DIR`: nats-server reads the file into
    // the options the flags already set, so a `store_dir` here would be a
    // "Duplicate 'store_dir' configuration" and the server would not start.
    format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n\
         jetstream: enabled\n",
        nats_jwt::operator_jwt(operator, &system.public_key()),
        system.public_key(),
    )
}

#[tokio::test]
async fn a_pipeline_logs_in_with_a_credentials_file_on_nats_in_operator_mode() {
    let scratch = std::env::temp_dir().join(format!("sluice-creds-{}", unique_suffix()));
    std::fs::create_dir_all(&scratch).unwrap();
    let path = |name: &str| scratch.join(name);
    let write = |name: &str, text: &str| {
        std::fs::write(path(name), text).unwrap();
        path(name).display().to_string()
    };

    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let user_jwt = nats_jwt::user_jwt(&account, &user, "sluice");
    let seed = user.seed().unwrap();
    let creds = write("sluice.creds", &nats_jwt::creds(&user_jwt, &user));
    let config = write(
        "operator.conf",
        &operator_mode_config(
            &operator,
            &system,
            &[
                (
                    system.public_key(),
                    nats_jwt::account_jwt(&operator, &system, "SYS", false),
                ),
                (
                    account.public_key(),
                    nats_jwt::account_jwt(&operator, &account, "SLUICE", true),
                ),
            ],
        ),
    );
    let nats = PrivateNats::start_secured(vec!["-c".into(), config]).await;

    let sandbox = Sandbox::create_secured(
        "creds",
        &nats.url(),
        vec![("SLUICE_NATS_CREDS".into(), creds)],
        &admin_database_url(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut p = Pipeline::in_sandbox(sandbox).start().await;
    p.import_and_wait(&Dataset::generate(3, 300, 23)).await;
    p.stop_services().await;
    let logs = p.logs();
    assert!(logs.contains("connected to NATS"), "{logs}");
    assert!(!logs.contains(&seed), "the user's seed is in a log");
    assert!(!logs.contains(&user_jwt), "the user's JWT is in a log");

    // A user whose account the server does not know: NATS refuses it, and
    // `sluice status` says so and fails, rather than wait for it.
    let stranger = KeyPair::new_user();
    let stranger_jwt = nats_jwt::user_jwt(&KeyPair::new_account(), &stranger, "stranger");
    let stranger_creds = write("stranger.creds", &nats_jwt::creds(&stranger_jwt, &stranger));
    let mut env = p.sandbox.service_env();
    env.retain(|(k, _)| k != "SLUICE_NATS_CREDS");
    env.push(("SLUICE_NATS_CREDS".into(), stranger_creds));
    let (succeeded, said) = sluice_with_only(&["status"], env).await;
    assert!(!succeeded, "{said}");
    let refusals = said
        .lines()
        .filter(|l| l.contains("authorization violation"));
    assert_eq!(refusals.count(), 1, "one line says why: {said}");
    assert!(
        !said.contains(&stranger.seed().unwrap()),
        "the seed is in the output"
    );
    assert!(!said.contains(&stranger_jwt), "the JWT is in the output");
    let _ = std::fs::remove_dir_all(&scratch);
}
