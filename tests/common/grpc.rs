//! A real ext_authz v3 gRPC client (the `envoy-types` generated
//! `AuthorizationClient` over a tonic channel) and checks shaped as Envoy
//! sends them (envoyproxy.io, `service.auth.v3.AttributeContext.HttpRequest`:
//! `path` is the request target with its query, undecoded; `host` the
//! `:authority`; header keys lower-cased, repeats merged with `,`, the
//! pseudo-headers included; `id` the `x-request-id`). Also a raw-bytes codec,
//! for calls no well-behaved client can encode.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

pub type Client = AuthorizationClient<Channel>;

pub const SECRET_METADATA: &str = "x-consent-gateway-authz";
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A connected client (connects lazily; the listener must be up).
pub fn client(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> AuthorizationClient<Channel> {
    let endpoint = Channel::from_shared(format!("http://{addr}")).expect("endpoint");
    let channel = rt
        .block_on(endpoint.connect())
        .expect("connect to the gRPC listener");
    AuthorizationClient::new(channel)
}

/// The `attributes.request.http` of a check as Envoy fills it.
pub fn http_request(
    id: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
) -> HttpRequest {
    let mut map: HashMap<String, String> = HashMap::new();
    let pseudo = [
        (":authority", "api.example.no"),
        (":method", method),
        (":path", target),
        (":scheme", "https"),
        ("x-request-id", id),
        ("x-forwarded-proto", "https"),
    ];
    let all = pseudo
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .chain(
            headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone())),
        );
    for (name, value) in all {
        map.entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    HttpRequest {
        id: id.to_string(),
        method: method.to_string(),
        headers: map,
        path: target.to_string(),
        host: "api.example.no".to_string(),
        scheme: "https".to_string(),
        protocol: "HTTP/1.1".to_string(),
        size: -1,
        ..HttpRequest::default()
    }
}

/// A check carrying `http` as the original request.
pub fn check_request(http: Option<HttpRequest>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http,
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// Calls `Check`, with the shared secret as metadata when given.
pub fn call(
    rt: &tokio::runtime::Runtime,
    client: &mut AuthorizationClient<Channel>,
    check: CheckRequest,
    secret: Option<&str>,
) -> Result<CheckResponse, tonic::Status> {
    let mut request = tonic::Request::new(check);
    if let Some(secret) = secret {
        let value = secret.parse().expect("metadata value");
        request.metadata_mut().insert(SECRET_METADATA, value);
    }
    rt.block_on(client.check(request))
        .map(tonic::Response::into_inner)
}

/// The code of the answer's `status` (absent is `UNKNOWN` for Envoy: deny).
pub fn code(response: &CheckResponse) -> i32 {
    response.status.as_ref().map_or(2, |s| s.code)
}

pub fn ok(response: &CheckResponse) -> Option<&OkHttpResponse> {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if code(response) == 0 => Some(ok),
        _ => None,
    }
}

pub fn denied(response: &CheckResponse) -> Option<&DeniedHttpResponse> {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => Some(d),
        _ => None,
    }
}

/// The headers an allow sets, lower-cased names, sorted.
pub fn headers_to_set(ok: &OkHttpResponse) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ok
        .headers
        .iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
        .collect();
    out.sort();
    out
}

/// A denial's header `name` (first value).
pub fn denied_header<'a>(denied: &'a DeniedHttpResponse, name: &str) -> Option<&'a str> {
    denied
        .headers
        .iter()
        .filter_map(|o| o.header.as_ref())
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// A denial's HTTP status and the `reason` of its problem body.
pub fn denied_status_reason(denied: &DeniedHttpResponse) -> (i32, String) {
    let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap_or_default();
    let status = denied.status.as_ref().map_or(0, |s| s.code);
    (status, body["reason"].as_str().unwrap_or("").to_string())
}

/// What Envoy does with an allow (ext_authz.cc, `Filter::onComplete`):
/// the headers to set overwrite, then `headers_to_remove` go.
pub fn apply_like_envoy(ok: &OkHttpResponse, original: &[(&str, String)]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = original
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    for (name, value) in headers_to_set(ok) {
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    }
    headers.retain(|(n, _)| !ok.headers_to_remove.iter().any(|r| r == n));
    headers.sort();
    headers
}

/// Passes bytes through unchanged: a call encoded by hand.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// Calls `Check` with a hand-encoded message; an answer is decoded.
pub fn call_raw(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    message: Vec<u8>,
    secret: Option<&str>,
) -> Result<CheckResponse, tonic::Status> {
    rt.block_on(async {
        let endpoint = Channel::from_shared(format!("http://{addr}")).expect("endpoint");
        let channel = endpoint.connect().await.expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(message);
        if let Some(secret) = secret {
            let value = secret.parse().expect("metadata value");
            request.metadata_mut().insert(SECRET_METADATA, value);
        }
        let path = http::uri::PathAndQuery::from_static(CHECK_PATH);
        let answer = grpc.unary(request, path, RawCodec).await?;
        let bytes = answer.into_inner();
        Ok(<CheckResponse as prost::Message>::decode(bytes.as_slice()).expect("a CheckResponse"))
    })
}
