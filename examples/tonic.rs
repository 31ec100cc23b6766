//! A tonic client and a tonic server with the layers, over loopback.
//!
//! The server stands in for Gemini's gRPC endpoint (`GenerativeService.GenerateContent`): it
//! answers `RESOURCE_EXHAUSTED` with a `RetryInfo` of 30 s, as Gemini does, for the first demo
//! key, and serves the others. A `UsageLayer` around the server records every call it answers,
//! with its `grpc-status`.
//!
//! The client wraps its `Channel` in `Usage`, `Retry` and `KeyRotation`: the key travels as
//! `x-goog-api-key` metadata, the first key is cooled down for the model from the `RetryInfo` in
//! `grpc-status-details-bin`, and the call is served by the next key.
//!
//! ```sh
//! cargo run --example tonic
//! ```
//!
//! The messages are hand-written prost structs (a subset of `google.ai.generativelanguage.v1beta`
//! and `google.rpc`), so no `protoc` is needed. To call Gemini itself, enable one of tonic's TLS
//! features and connect to `https://generativelanguage.googleapis.com`.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::ext::ModelName;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::store::MemoryStore;
use gemini_balance::usage::UsageLayer;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tower::{service_fn, ServiceBuilder};

type Error = Box<dyn std::error::Error + Send + Sync>;

const GENERATE: &str = "/google.ai.generativelanguage.v1beta.GenerativeService/GenerateContent";
const MODEL: &str = "gemini-2.0-flash";
pub(crate) const KEYS: [&str; 2] = [
    "AIzaSyDemo_abcdefghijklmnopqrstuvwx0001",
    "AIzaSyDemo_abcdefghijklmnopqrstuvwx0002",
];

#[tokio::main]
async fn main() -> Result<(), Error> {
    let demo = run().await?;
    for answer in &demo.answers {
        println!("answer: {answer}");
    }
    let Demo {
        pool,
        client_usage,
        server_usage,
        ..
    } = demo;

    for key in pool.snapshots() {
        println!("key {} {:?} requests={}", key.id, key.status, key.requests);
    }
    for record in client_usage.records() {
        println!(
            "client record: attempts={} key={} grpc-status={:?} classes={:?}",
            record.attempts,
            record.key.map(|k| k.to_string()).unwrap_or_default(),
            record.grpc_status,
            record
                .attempt_log
                .iter()
                .map(|a| a.class.unwrap_or("success"))
                .collect::<Vec<_>>(),
        );
    }
    for record in server_usage.records() {
        println!("server record: grpc-status={:?}", record.grpc_status);
    }
    Ok(())
}

/// What the demo did: the answers, the pool, and the usage records of both sides.
pub(crate) struct Demo {
    pub(crate) answers: Vec<String>,
    pub(crate) pool: KeyPool,
    pub(crate) client_usage: MemoryStore,
    pub(crate) server_usage: MemoryStore,
}

/// Starts the stand-in server, then calls it twice through the client's layers.
pub(crate) async fn run() -> Result<Demo, Error> {
    // The server, with a usage layer around it.
    let server_usage = MemoryStore::new();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(UsageLayer::new(server_usage.clone()))
            .add_service(StandInGemini)
            .serve_with_incoming(incoming),
    );

    // The client: the layers around a tonic `Channel`.
    let pool = KeyPool::builder().keys(KEYS).build()?;
    let client_usage = MemoryStore::new();
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = ServiceBuilder::new()
        .layer(UsageLayer::new(client_usage.clone()))
        // `Retry` rebuilds each attempt's body from the bytes it buffered; tonic's body type
        // has no `From<Bytes>`, so `Retry` is given its constructor.
        .layer(RetryLayer::new().replay_with(tonic::body::Body::new))
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(channel);

    let mut grpc = tonic::client::Grpc::new(client);
    let mut answers = Vec::new();
    for prompt in ["Hello", "Hello again"] {
        grpc.ready().await?;
        let mut req = tonic::Request::new(GenerateContentRequest {
            model: format!("models/{MODEL}"),
            contents: vec![Content {
                role: "user".to_owned(),
                parts: vec![Part {
                    text: prompt.to_owned(),
                }],
            }],
        });
        // A gRPC path does not name the model: tell the key layer, for per-model cooldowns.
        req.extensions_mut().insert(ModelName::new(MODEL));
        let res = grpc
            .unary(
                req,
                http::uri::PathAndQuery::from_static(GENERATE),
                ProstCodec::<GenerateContentRequest, GenerateContentResponse>::default(),
            )
            .await?;
        let text = res.get_ref().candidates[0]
            .content
            .as_ref()
            .map_or("", |c| &c.parts[0].text);
        answers.push(text.to_string());
    }
    Ok(Demo {
        answers,
        pool,
        client_usage,
        server_usage,
    })
}

/// Stands in for Gemini's gRPC endpoint: the first demo key's quota is used up.
#[derive(Debug, Clone)]
struct StandInGemini;

impl NamedService for StandInGemini {
    const NAME: &'static str = "google.ai.generativelanguage.v1beta.GenerativeService";
}

impl tower::Service<http::Request<tonic::body::Body>> for StandInGemini {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != GENERATE {
                return Ok(Status::unimplemented("unknown method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<
                GenerateContentResponse,
                GenerateContentRequest,
            >::default());
            Ok(grpc.unary(service_fn(generate_content), req).await)
        })
    }
}

async fn generate_content(
    req: tonic::Request<GenerateContentRequest>,
) -> Result<tonic::Response<GenerateContentResponse>, Status> {
    let key = req
        .metadata()
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok());
    match key {
        None => {
            return Err(Status::unauthenticated(
                "Method doesn't allow unregistered callers",
            ))
        }
        Some(key) if key == KEYS[0] => return Err(quota_exceeded(Duration::from_secs(30))),
        Some(_) => {}
    }
    let prompt = req
        .get_ref()
        .contents
        .iter()
        .flat_map(|c| &c.parts)
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(tonic::Response::new(GenerateContentResponse {
        candidates: vec![Candidate {
            content: Some(Content {
                role: "model".to_owned(),
                parts: vec![Part {
                    text: format!("you said: {prompt}"),
                }],
            }),
        }],
    }))
}

/// Gemini's quota error: `RESOURCE_EXHAUSTED` with a `RetryInfo` in its details.
fn quota_exceeded(retry_delay: Duration) -> Status {
    let message = "You exceeded your current quota, please check your plan and billing details.";
    let retry_info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: retry_delay.as_secs() as i64,
            nanos: 0,
        }),
    };
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.to_owned(),
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
            value: retry_info.encode_to_vec(),
        }],
    };
    Status::with_details(
        Code::ResourceExhausted,
        message,
        Bytes::from(details.encode_to_vec()),
    )
}

// --- messages: a hand-written subset of the protos ------------------------------------------

#[derive(Clone, PartialEq, Message)]
struct GenerateContentRequest {
    #[prost(string, tag = "1")]
    model: String,
    #[prost(message, repeated, tag = "2")]
    contents: Vec<Content>,
}

#[derive(Clone, PartialEq, Message)]
struct Content {
    #[prost(message, repeated, tag = "1")]
    parts: Vec<Part>,
    #[prost(string, tag = "2")]
    role: String,
}

#[derive(Clone, PartialEq, Message)]
struct Part {
    #[prost(string, tag = "2")]
    text: String,
}

#[derive(Clone, PartialEq, Message)]
struct GenerateContentResponse {
    #[prost(message, repeated, tag = "1")]
    candidates: Vec<Candidate>,
}

#[derive(Clone, PartialEq, Message)]
struct Candidate {
    #[prost(message, optional, tag = "1")]
    content: Option<Content>,
}

/// `google.rpc.Status`
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

// --- a prost codec by hand (what `tonic-prost` provides) ------------------------------------

struct ProstCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for ProstCodec<E, D> {
    fn default() -> Self {
        ProstCodec(PhantomData)
    }
}

struct ProstEncoder<E>(PhantomData<fn(E)>);
struct ProstDecoder<D>(PhantomData<fn() -> D>);

impl<E, D> Codec for ProstCodec<E, D>
where
    E: Message + Send + 'static,
    D: Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = ProstEncoder<E>;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

impl<E: Message> Encoder for ProstEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<D: Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
