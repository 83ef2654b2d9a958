//! The OpenAPI document checked into the repository is the one the code generates.

#[test]
fn checked_in_openapi_matches_the_code() {
    let generated = portcullis_api::openapi::document();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    if std::env::var_os("PORTCULLIS_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, format!("{generated}\n")).expect("write openapi.json");
        return;
    }
    if checked_in.trim_end() != generated.trim_end() {
        let first_difference = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "openapi.json is out of date (first difference at line {}): run \
             `PORTCULLIS_UPDATE_OPENAPI=1 cargo test -p portcullis --test it openapi` and commit it",
            first_difference + 1
        );
    }
}

#[tokio::test]
async fn served_document_is_openapi_3_1() {
    let doc: serde_json::Value =
        serde_json::from_str(&portcullis_api::openapi::document()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/messages",
        "/v1/messages/{id}",
        "/v1/keys",
        "/v1/keys/{id}/rotate",
        "/v1/inbound",
        "/healthz",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
}
