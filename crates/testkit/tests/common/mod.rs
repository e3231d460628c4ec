//! Helpers for the testkit's own tests: a server, clients as various users, raw requests.

#![allow(dead_code)]

use bulkhead_testkit::{ADMIN_TOKEN, TestServer};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

pub async fn server() -> TestServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    TestServer::start().await.expect("testkit starts")
}

pub async fn client(server: &TestServer, token: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig(token)).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

pub async fn admin(server: &TestServer) -> Client {
    client(server, ADMIN_TOKEN).await
}

/// A raw request: status code and JSON body (or Null).
pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap();
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .expect("the request is sent");
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

pub fn kubectl(
    server: &TestServer,
    dir: &std::path::Path,
    token: &str,
    args: &[&str],
) -> std::process::Output {
    let path = server.write_kubeconfig(dir, token).unwrap();
    std::process::Command::new("kubectl")
        .env("KUBECONFIG", path)
        .args(args)
        .output()
        .expect("kubectl runs")
}
