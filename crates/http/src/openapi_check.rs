//! The OpenAPI description is written by hand (`openapi.json`); this test
//! holds it to the router in `admin.rs`, so neither can change alone:
//! every route and method the router registers is described, and every
//! described operation is routed.

use std::collections::BTreeSet;

/// (method, path) of every `.route("PATH", get(..).post(..))` in the
/// source of `routes()`.
fn routed(source: &str) -> BTreeSet<(String, String)> {
    let start = source.find("fn routes()").expect("admin.rs has routes()");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
    let mut found = BTreeSet::new();
    for chunk in body.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("a route's path literal");
        let handlers = &chunk[chunk.find(',').unwrap_or(0)..];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                let before = handlers[..i].chars().last().unwrap_or(' ');
                !before.is_alphanumeric() && before != '_'
            });
            if called {
                found.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    found
}

fn described(spec: &str) -> BTreeSet<(String, String)> {
    let spec: serde_json::Value = serde_json::from_str(spec).expect("openapi.json is JSON");
    let mut found = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            found.insert((method.clone(), path.clone()));
        }
    }
    found
}

#[test]
fn every_route_is_described_and_every_description_is_routed() {
    let routed = routed(include_str!("admin.rs"));
    let described = described(crate::admin::OPENAPI);
    let undocumented: Vec<_> = routed.difference(&described).collect();
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routed but not in openapi.json: {undocumented:?}; in openapi.json but not routed: {unrouted:?}"
    );
    assert!(routed.len() >= 19, "{routed:?}");
}

#[test]
fn the_route_reader_sees_chained_methods() {
    let src = "fn routes() -> R {\n    Router::new()\n        .route(\"/a\", get(x).delete(y))\n        .route(\n            \"/b/{id}\",\n            axum::routing::delete(z),\n        )\n}\n";
    let want: BTreeSet<_> = [("delete", "/a"), ("get", "/a"), ("delete", "/b/{id}")]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(routed(src), want);
}
