//! The testkit against what the real API server does. Each test states the behaviour it checks; the
//! expected messages are the API server's own wording.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use common::{admin, raw, server};

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

async fn ns(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn create_get_and_the_errors_of_each() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "a");
    let created = cms
        .create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert!(created.resource_version().is_some());

    let dup = api_error(
        cms.create(&PostParams::default(), &cm("one", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (dup.code, dup.reason.as_str(), dup.message.as_str()),
        (409, "AlreadyExists", "configmaps \"one\" already exists")
    );
    let missing = api_error(cms.get("nope").await.unwrap_err());
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "configmaps \"nope\" not found")
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "no-such-namespace");
    let no_ns = api_error(
        elsewhere
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (no_ns.code, no_ns.message.as_str()),
        (404, "namespaces \"no-such-namespace\" not found")
    );
    let bad_name = api_error(
        cms.create(&PostParams::default(), &cm("Not_Valid", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(bad_name.code, 422, "{}", bad_name.message);

    let mut generated = cm("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = cms.create(&PostParams::default(), &generated).await.unwrap();
    assert!(
        g.name_any().starts_with("gen-") && g.name_any().len() == 9,
        "{}",
        g.name_any()
    );
}

#[tokio::test]
async fn a_stale_resource_version_conflicts_and_a_no_op_update_is_not_a_write() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "a");
    let first = cms
        .create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    let same = cms.replace("c", &PostParams::default(), &first).await.unwrap();
    assert_eq!(
        same.resource_version(),
        first.resource_version(),
        "nothing changed, so no new resourceVersion"
    );
    let mut changed = first.clone();
    changed.data = Some([("k".to_owned(), "w".to_owned())].into());
    let second = cms.replace("c", &PostParams::default(), &changed).await.unwrap();
    assert_ne!(second.resource_version(), first.resource_version());
    let stale = api_error(
        cms.replace("c", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!(stale.code, 409);
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn a_selector_watch_sees_objects_enter_and_leave_the_selection() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "a");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = cms
        .watch(&WatchParams::default().labels("team=red").timeout(10), &start)
        .await
        .unwrap()
        .boxed();

    cms.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap(); // not selected: no event
    let label = |v: Value| Patch::Merge(json!({"metadata": {"labels": {"team": v}}}));
    cms.patch("x", &PatchParams::default(), &label(json!("red")))
        .await
        .unwrap(); // enters: ADDED
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap(); // MODIFIED
    cms.patch("x", &PatchParams::default(), &label(json!("blue")))
        .await
        .unwrap(); // leaves: DELETED
    cms.delete("x", &DeleteParams::default()).await.unwrap(); // not selected: no event

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            WatchEvent::Added(o) => seen.push(("ADDED", o.labels().get("team").cloned())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.labels().get("team").cloned())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.labels().get("team").cloned())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    // As the watch cache does, the object leaving the selection is sent as DELETED in its last selected state.
    let red = Some("red".to_owned());
    assert_eq!(
        seen,
        [
            ("ADDED", red.clone()),
            ("MODIFIED", red.clone()),
            ("DELETED", red)
        ]
    );
}

#[tokio::test]
async fn a_watch_resumes_from_a_resource_version_and_sends_bookmarks() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "a");
    let before = cms
        .create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("two", json!({})))
        .await
        .unwrap();
    let mut events = cms
        .watch(
            &WatchParams::default().timeout(5),
            &before.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    let mut bookmark = false;
    while !bookmark || added.is_empty() {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => added.push(o.name_any()),
            WatchEvent::Bookmark(b) => bookmark = !b.metadata.resource_version.is_empty(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        added,
        ["two"],
        "only what happened after the given resourceVersion is replayed"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "a");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/wait".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("held").await.unwrap();
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "marked for deletion, still there"
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_error(cms.get("held").await.unwrap_err()).code,
        404,
        "gone with its last finalizer"
    );
}

#[tokio::test]
async fn owners_collect_dependents_and_a_namespace_takes_its_contents_with_it() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "a");
    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let mut dependent = cm("dependent", json!({}));
    dependent.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &dependent).await.unwrap();
    cms.create(&PostParams::default(), &cm("bystander", json!({})))
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(cms.get("dependent").await.unwrap_err()).code, 404);
    assert!(cms.get("bystander").await.is_ok());

    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(cms.get("bystander").await.unwrap_err()).code, 404);
    assert_eq!(api_error(namespaces.get("a").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn nothing_is_created_in_a_terminating_namespace() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "a");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/wait".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.delete("a", &DeleteParams::default()).await.unwrap();
    let terminating = namespaces.get("a").await.unwrap();
    assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"));
    let refused = api_error(
        cms.create(&PostParams::default(), &cm("late", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    assert!(
        refused.message.contains("because it is being terminated"),
        "{}",
        refused.message
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_error(namespaces.get("a").await.unwrap_err()).code,
        404,
        "the namespace goes with its last object"
    );
}

#[tokio::test]
async fn the_status_subresource_separates_spec_and_status_writes() {
    let server = server().await;
    server.install_bulkhead_crds().unwrap();
    let client = admin(&server).await;
    let tenants: Api<bulkhead_api::Tenant> = Api::all(client);
    let t: bulkhead_api::Tenant = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "t"},
        "spec": {"owners": [{"kind": "User", "name": "alice"}]}, "status": {"size": 9},
    }))
    .unwrap();
    let created = tenants.create(&PostParams::default(), &t).await.unwrap();
    assert_eq!(created.status, None, "status is not set on create");
    assert_eq!(created.metadata.generation, Some(1));
    let status = json!({"status": {"size": 3, "state": "Active"}});
    let with_status = tenants
        .patch_status("t", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(with_status.status.as_ref().unwrap().size, 3);
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "a status write is not a new generation"
    );
    let main = json!({"spec": {"cordoned": true}, "status": {"size": 99}});
    let after = tenants
        .patch("t", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert!(after.spec.cordoned);
    assert_eq!(
        after.status.unwrap().size,
        3,
        "status changes through the main resource are ignored"
    );
    assert_eq!(after.metadata.generation, Some(2));
}

#[tokio::test]
async fn server_side_apply_removes_what_a_manager_stopped_applying() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "a");
    let apply = |data: Value| {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}),
        )
    };
    let pp = PatchParams::apply("one");
    cms.patch("c", &pp, &apply(json!({"a": "1", "b": "2"})))
        .await
        .unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"z": "theirs"}})),
    )
    .await
    .unwrap();
    let after = cms.patch("c", &pp, &apply(json!({"a": "1"}))).await.unwrap();
    let data = after.data.unwrap();
    assert_eq!(data.get("b"), None, "dropped by its manager");
    assert_eq!(
        data.get("z").map(String::as_str),
        Some("theirs"),
        "another writer's field stays"
    );
    let missing_manager = api_error(
        cms.patch("c", &PatchParams::default(), &apply(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(missing_manager.code, 400);
}

#[tokio::test]
async fn custom_resources_are_validated_strictly_or_pruned() {
    let server = server().await;
    server.install_bulkhead_crds().unwrap();
    let client = admin(&server).await;
    let body = |spec: Value| {
        serde_json::to_vec(&json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "t"}, "spec": spec})).unwrap()
    };
    let path = "/apis/bulkhead.dev/v1alpha1/tenants";
    let (code, status) = raw(
        &client,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        "application/json",
        body(json!({"ownerz": []})),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "Tenant in version \"v1alpha1\" cannot be handled as a Tenant: strict decoding error: unknown field \"spec.ownerz\""
    );
    let (code, status) = raw(
        &client,
        "POST",
        path,
        "application/json",
        body(json!({"owners": [{"kind": "Robot", "name": "r"}]})),
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.owners[0].kind: Unsupported value: \"Robot\""),
        "{status}"
    );
    let (code, created) = raw(
        &client,
        "POST",
        path,
        "application/json",
        body(json!({"ownerz": [], "cordoned": true})),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["spec"].get("ownerz"),
        None,
        "unknown fields are pruned without Strict"
    );
    assert_eq!(created["spec"]["cordoned"], true);
}

#[tokio::test]
async fn malformed_requests_get_a_status_not_a_crash() {
    let server = server().await;
    let client = admin(&server).await;
    let (code, status) = raw(
        &client,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (400, Some("Status"), Some("BadRequest"))
    );
    let huge = vec![b' '; 4 * 1024 * 1024];
    let (code, _) = raw(&client, "POST", "/api/v1/namespaces", "application/json", huge).await;
    assert_eq!(code, 413);
    let (code, status) = raw(
        &client,
        "GET",
        "/apis/example.com/v1/widgets",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    let (code, _) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default",
        "text/plain",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(code, 415);
    let anonymous = common::client(&server, "no-such-token").await;
    let (code, status) = raw(
        &anonymous,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (401, Some("Unauthorized")));
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "a");
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    let names: Vec<String> = cms
        .list(&ListParams::default().limit(2))
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(names, ["c0", "c1"]);
    let all: Vec<String> = kube::runtime::watcher::watcher(
        cms.clone(),
        kube::runtime::watcher::Config::default().page_size(2),
    )
    .take_while(|e| std::future::ready(!matches!(e, Ok(kube::runtime::watcher::Event::InitDone))))
    .filter_map(|e| async move {
        match e {
            Ok(kube::runtime::watcher::Event::InitApply(c)) => Some(c.name_any()),
            _ => None,
        }
    })
    .collect()
    .await;
    assert_eq!(
        all,
        ["c0", "c1", "c2", "c3", "c4"],
        "kube-rs's paged initial list sees every object once"
    );
}

#[tokio::test]
async fn crds_must_be_structural_are_served_once_created_and_take_their_objects_when_deleted() {
    let server = server().await;
    let client = admin(&server).await;
    let crd = |schema: Value| {
        serde_json::to_vec(&json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]},
        }))
        .unwrap()
    };
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (code, status) = raw(
        &client,
        "POST",
        path,
        "application/json",
        crd(json!({"type": "object", "properties": {"spec": {"properties": {"size": {"type": "integer"}}}}})),
    )
    .await;
    assert_eq!(code, 422, "a field without a type is not structural: {status}");
    assert!(
        status["message"].as_str().unwrap().contains(".spec: no type"),
        "{status}"
    );
    let mut misnamed: Value = serde_json::from_slice(&crd(json!({"type": "object"}))).unwrap();
    misnamed["metadata"]["name"] = json!("gadgets.example.com");
    assert_eq!(
        raw(
            &client,
            "POST",
            path,
            "application/json",
            serde_json::to_vec(&misnamed).unwrap()
        )
        .await
        .0,
        422
    );

    let good = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}});
    let (code, created) = raw(&client, "POST", path, "application/json", crd(good)).await;
    assert_eq!(code, 201, "{created}");
    let (code, established) = raw(
        &client,
        "GET",
        &format!("{path}/widgets.example.com"),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    let conditions = established["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"),
        "{established}"
    );
    let (code, discovery) = raw(
        &client,
        "GET",
        "/apis/example.com/v1",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(discovery["resources"][0]["name"], "widgets");

    ns(&client, "a").await;
    let widget = serde_json::to_vec(&json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}})).unwrap();
    assert_eq!(
        raw(
            &client,
            "POST",
            "/apis/example.com/v1/namespaces/a/widgets",
            "application/json",
            widget
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            &client,
            "DELETE",
            &format!("{path}/widgets.example.com"),
            "application/json",
            Vec::new()
        )
        .await
        .0,
        200
    );
    assert_eq!(
        raw(
            &client,
            "GET",
            "/apis/example.com/v1/namespaces/a/widgets/w",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        404
    );
    assert_eq!(
        raw(
            &client,
            "GET",
            "/apis/example.com/v1",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn object_count_quotas_cover_any_resource() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let quota = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"count/secrets": "1", "configmaps": "0", "requests.cpu": "1"}}})).unwrap();
    let post = |path: &'static str, body: Vec<u8>| {
        let client = client.clone();
        async move { raw(&client, "POST", path, "application/json", body).await }
    };
    assert_eq!(post("/api/v1/namespaces/a/resourcequotas", quota).await.0, 201);
    let object = |kind: &str, name: &str| {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}})).unwrap()
    };
    assert_eq!(
        post("/api/v1/namespaces/a/secrets", object("Secret", "s1"))
            .await
            .0,
        201
    );
    let (code, status) = post("/api/v1/namespaces/a/secrets", object("Secret", "s2")).await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "secrets \"s2\" is forbidden: exceeded quota: q, requested: count/secrets=1, used: count/secrets=1, limited: count/secrets=1"
    );
    let (code, status) = post("/api/v1/namespaces/a/configmaps", object("ConfigMap", "c1")).await;
    assert_eq!(code, 403, "{status}");
    let (_, q) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/a/resourcequotas/q",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(
        q["status"]["used"],
        json!({"count/secrets": "1", "configmaps": "0", "requests.cpu": "0"})
    );
}

#[tokio::test]
async fn pod_count_quotas_are_admitted_and_reported_as_the_api_server_does() {
    let server = server().await;
    let client = admin(&server).await;
    ns(&client, "a").await;
    let quota = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"}}})).unwrap();
    assert_eq!(
        raw(
            &client,
            "POST",
            "/api/v1/namespaces/a/resourcequotas",
            "application/json",
            quota
        )
        .await
        .0,
        201
    );
    let pod = |name: &str| {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "pause"}]}})).unwrap()
    };
    for name in ["p1", "p2"] {
        assert_eq!(
            raw(
                &client,
                "POST",
                "/api/v1/namespaces/a/pods",
                "application/json",
                pod(name)
            )
            .await
            .0,
            201
        );
    }
    let (code, status) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/a/pods",
        "application/json",
        pod("p3"),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );
    let (_, q) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/a/resourcequotas/q",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(q["status"], json!({"hard": {"pods": "2"}, "used": {"pods": "2"}}));
    // A deleted pod frees its slot, and the quota says so.
    assert_eq!(
        raw(
            &client,
            "DELETE",
            "/api/v1/namespaces/a/pods/p1",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        200
    );
    let (_, q) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/a/resourcequotas/q",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(q["status"]["used"]["pods"], "1");
    assert_eq!(
        raw(
            &client,
            "POST",
            "/api/v1/namespaces/a/pods",
            "application/json",
            pod("p3")
        )
        .await
        .0,
        201
    );
}

#[tokio::test]
async fn deleting_crds_as_a_collection_stops_serving_them_too() {
    let server = server().await;
    server.install_bulkhead_crds().unwrap();
    let client = admin(&server).await;
    assert_eq!(
        raw(
            &client,
            "GET",
            "/apis/bulkhead.dev/v1alpha1/tenants",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        200
    );
    let (code, _) = raw(
        &client,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        raw(
            &client,
            "GET",
            "/apis/bulkhead.dev/v1alpha1/tenants",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        404
    );
}
