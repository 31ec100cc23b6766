//! gRPC over loopback with tonic: the body-agnostic layers around a tonic client `Channel` and
//! around a tonic server, against a mock of Gemini's `GenerativeService` that answers
//! `RESOURCE_EXHAUSTED` with a `RetryInfo` in `grpc-status-details-bin` for a rate-limited key,
//! and `INVALID_ARGUMENT` with `ErrorInfo { reason: API_KEY_INVALID }` for an invalid one.
//!
//! The messages are hand-written prost structs (a subset of
//! `google.ai.generativelanguage.v1beta` and `google.rpc`), so no `protoc` is needed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gemini_balance::classify::{FailureClass, QuotaScope};
use gemini_balance::ext::ModelName;
use gemini_balance::keys::{ApiKey, DisabledReason, KeyPool, KeyRotationLayer, KeyStatus};
use gemini_balance::retry::RetryLayer;
use gemini_balance::store::stats::Window;
use gemini_balance::store::{MemoryStore, SqliteStore, StatsStore, UsageSink};
use gemini_balance::usage::UsageLayer;
use prost::Message;
use support::test_keys;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tower::{service_fn, BoxError, ServiceBuilder};

const FLASH: &str = "gemini-2.0-flash";
const SERVICE: &str = "google.ai.generativelanguage.v1beta.GenerativeService";
const GENERATE: &str = "/google.ai.generativelanguage.v1beta.GenerativeService/GenerateContent";

// --- the messages ---------------------------------------------------------------------------

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
    #[prost(message, optional, tag = "2")]
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Clone, PartialEq, Message)]
struct Candidate {
    #[prost(message, optional, tag = "1")]
    content: Option<Content>,
}

#[derive(Clone, PartialEq, Message)]
struct UsageMetadata {
    #[prost(int32, tag = "1")]
    prompt_token_count: i32,
    #[prost(int32, tag = "2")]
    candidates_token_count: i32,
    #[prost(int32, tag = "4")]
    total_token_count: i32,
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

/// `google.rpc.ErrorInfo`
#[derive(Clone, PartialEq, Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
}

/// `google.rpc.QuotaFailure`
#[derive(Clone, PartialEq, Message)]
struct QuotaFailure {
    #[prost(message, repeated, tag = "1")]
    violations: Vec<Violation>,
}

#[derive(Clone, PartialEq, Message)]
struct Violation {
    #[prost(string, tag = "4")]
    quota_metric: String,
    #[prost(string, tag = "5")]
    quota_id: String,
}

fn any<M: Message>(type_name: &str, message: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: message.encode_to_vec(),
    }
}

// --- a prost codec by hand ------------------------------------------------------------------

/// tonic's `Codec` for prost messages (what `tonic-prost` provides, in a few lines).
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

// --- a mock GenerativeService ---------------------------------------------------------------

#[derive(Debug, Clone)]
enum GrpcFault {
    RateLimited { retry_delay_secs: i64 },
    InvalidKey,
    Unavailable,
}

/// Gemini's `GenerativeService.GenerateContent`, failing per key as told.
#[derive(Clone, Default)]
struct MockGenerativeService {
    faults: Arc<Mutex<HashMap<String, GrpcFault>>>,
    keys_seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl NamedService for MockGenerativeService {
    const NAME: &'static str = SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl MockGenerativeService {
    fn set_fault(&self, key: &str, fault: GrpcFault) {
        self.faults.lock().unwrap().insert(key.to_owned(), fault);
    }

    fn keys_seen(&self) -> Vec<Option<String>> {
        self.keys_seen.lock().unwrap().clone()
    }

    fn answer(
        &self,
        req: tonic::Request<GenerateContentRequest>,
    ) -> Result<tonic::Response<GenerateContentResponse>, Status> {
        let key = req
            .metadata()
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.keys_seen.lock().unwrap().push(key.clone());
        let Some(key) = key else {
            return Err(Status::unauthenticated(
                "Method doesn't allow unregistered callers",
            ));
        };
        match self.faults.lock().unwrap().get(&key).cloned() {
            Some(GrpcFault::RateLimited { retry_delay_secs }) => {
                Err(rate_limited(retry_delay_secs))
            }
            Some(GrpcFault::InvalidKey) => Err(invalid_key()),
            Some(GrpcFault::Unavailable) => Err(Status::unavailable("The model is overloaded.")),
            None => {
                let req = req.into_inner();
                let prompt = req
                    .contents
                    .iter()
                    .flat_map(|c| &c.parts)
                    .map(|p| p.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(tonic::Response::new(GenerateContentResponse {
                    candidates: vec![Candidate {
                        content: Some(Content {
                            parts: vec![Part {
                                text: format!("echo: {prompt}"),
                            }],
                            role: "model".to_owned(),
                        }),
                    }],
                    usage_metadata: Some(UsageMetadata {
                        prompt_token_count: 3,
                        candidates_token_count: 4,
                        total_token_count: 7,
                    }),
                }))
            }
        }
    }
}

/// Gemini's quota error: `RESOURCE_EXHAUSTED` with `QuotaFailure` and `RetryInfo` details.
fn rate_limited(retry_delay_secs: i64) -> Status {
    let message = "You exceeded your current quota, please check your plan and billing details.";
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.to_owned(),
        details: vec![
            any(
                "google.rpc.QuotaFailure",
                &QuotaFailure {
                    violations: vec![Violation {
                        quota_metric:
                            "generativelanguage.googleapis.com/generate_content_free_tier_requests"
                                .to_owned(),
                        quota_id: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier".to_owned(),
                    }],
                },
            ),
            any(
                "google.rpc.RetryInfo",
                &RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: retry_delay_secs,
                        nanos: 0,
                    }),
                },
            ),
        ],
    };
    Status::with_details(
        Code::ResourceExhausted,
        message,
        Bytes::from(details.encode_to_vec()),
    )
}

fn invalid_key() -> Status {
    let message = "API key not valid. Please pass a valid API key.";
    let details = RpcStatus {
        code: Code::InvalidArgument as i32,
        message: message.to_owned(),
        details: vec![any(
            "google.rpc.ErrorInfo",
            &ErrorInfo {
                reason: "API_KEY_INVALID".to_owned(),
                domain: "googleapis.com".to_owned(),
            },
        )],
    };
    Status::with_details(
        Code::InvalidArgument,
        message,
        Bytes::from(details.encode_to_vec()),
    )
}

impl tower::Service<http::Request<tonic::body::Body>> for MockGenerativeService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != GENERATE {
                return Ok(Status::unimplemented("unknown method").into_http());
            }
            let handler = service_fn(move |req| {
                let answer = this.answer(req);
                async move { answer }
            });
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<
                GenerateContentResponse,
                GenerateContentRequest,
            >::default());
            Ok(grpc.unary(handler, req).await)
        })
    }
}

/// Starts the mock on a loopback port with no layers (an upstream), returning its address.
async fn start_upstream(mock: MockGenerativeService) -> SocketAddr {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(mock)
            .serve_with_incoming(incoming),
    );
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Calls `GenerateContent` on any gRPC service of `http` requests (a layered channel, or a
/// plain one), for `FLASH`; the model also travels as a `ModelName` extension, since a gRPC
/// path does not name it.
async fn generate<T>(
    service: T,
    prompt: &str,
) -> Result<tonic::Response<GenerateContentResponse>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let mut req = tonic::Request::new(GenerateContentRequest {
        model: format!("models/{FLASH}"),
        contents: vec![Content {
            parts: vec![Part {
                text: prompt.to_owned(),
            }],
            role: "user".to_owned(),
        }],
    });
    req.extensions_mut().insert(ModelName::new(FLASH));
    grpc.unary(
        req,
        http::uri::PathAndQuery::from_static(GENERATE),
        ProstCodec::<GenerateContentRequest, GenerateContentResponse>::default(),
    )
    .await
}

fn answer_text(res: &tonic::Response<GenerateContentResponse>) -> &str {
    &res.get_ref().candidates[0].content.as_ref().unwrap().parts[0].text
}

fn key_status(pool: &KeyPool, key: &str) -> KeyStatus {
    pool.snapshot(ApiKey::new(key).unwrap().id())
        .unwrap()
        .status
}

#[tokio::test]
async fn a_resource_exhausted_key_is_cooled_down_and_another_key_serves_the_call() {
    let mock = MockGenerativeService::default();
    let keys = test_keys(2);
    mock.set_fault(
        &keys[0],
        GrpcFault::RateLimited {
            retry_delay_secs: 30,
        },
    );
    let addr = start_upstream(mock.clone()).await;
    let pool = KeyPool::builder().keys(&keys).build().unwrap();
    let store = MemoryStore::new();

    // The client side: the layers around a tonic `Channel`.
    let client = ServiceBuilder::new()
        .layer(UsageLayer::new(store.clone()))
        .layer(
            RetryLayer::new()
                .base_delay(Duration::from_millis(1))
                // tonic's `Body` has no `From<Bytes>`: its constructor rebuilds each attempt's body.
                .replay_with(tonic::body::Body::new),
        )
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(channel(addr).await);

    let before = SystemTime::now();
    let res = generate(client.clone(), "hello").await.unwrap();
    let after = SystemTime::now();
    assert_eq!(answer_text(&res), "echo: hello");
    // The key travelled as `x-goog-api-key` metadata: first the exhausted one, then the other.
    assert_eq!(
        mock.keys_seen(),
        [Some(keys[0].clone()), Some(keys[1].clone())]
    );

    // Cooled down for the model, for the `RetryInfo` delay read from grpc-status-details-bin.
    let KeyStatus::CoolingDown(cooldowns) = key_status(&pool, &keys[0]) else {
        panic!("expected a cooldown, got {:?}", key_status(&pool, &keys[0]));
    };
    assert_eq!(cooldowns[0].model, FLASH);
    assert!(cooldowns[0].until >= before + Duration::from_secs(29));
    assert!(cooldowns[0].until <= after + Duration::from_secs(31));
    let snapshot = pool.snapshot(ApiKey::new(&keys[0]).unwrap().id()).unwrap();
    assert_eq!(
        snapshot.last_error.unwrap().class,
        FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            scope: QuotaScope::PerMinute,
        }
    );

    // The next call goes straight to the other key.
    let res = generate(client, "again").await.unwrap();
    assert_eq!(answer_text(&res), "echo: again");
    assert_eq!(mock.keys_seen().len(), 3);
    assert_eq!(mock.keys_seen()[2].as_deref(), Some(keys[1].as_str()));

    // Usage is recorded for gRPC calls: attempts, key, and the final grpc-status.
    let records = store.records();
    assert_eq!(records.len(), 2);
    let first = &records[0];
    assert!(first.success);
    assert_eq!(first.grpc_status, Some(0));
    assert_eq!(first.attempts, 2);
    assert_eq!(first.model.as_deref(), Some(FLASH));
    assert_eq!(
        first.key.as_ref(),
        Some(ApiKey::new(&keys[1]).unwrap().id())
    );
    assert_eq!(first.attempt_log[0].class, Some("rate_limited"));
    assert_eq!(first.route, GENERATE);
}

#[tokio::test]
async fn an_invalid_key_over_grpc_is_disabled() {
    let mock = MockGenerativeService::default();
    let keys = test_keys(2);
    mock.set_fault(&keys[0], GrpcFault::InvalidKey);
    let addr = start_upstream(mock.clone()).await;
    let pool = KeyPool::builder().keys(&keys).build().unwrap();

    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::new()
                .base_delay(Duration::from_millis(1))
                // tonic's `Body` has no `From<Bytes>`: its constructor rebuilds each attempt's body.
                .replay_with(tonic::body::Body::new),
        )
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(channel(addr).await);
    let res = generate(client, "hi").await.unwrap();
    assert_eq!(answer_text(&res), "echo: hi");
    assert_eq!(
        key_status(&pool, &keys[0]),
        KeyStatus::Disabled(DisabledReason::Rejected {
            status: 400,
            reason: "API_KEY_INVALID".to_owned()
        })
    );
}

#[tokio::test]
async fn when_every_key_is_exhausted_the_caller_gets_resource_exhausted_with_its_details() {
    let mock = MockGenerativeService::default();
    let keys = test_keys(2);
    for key in &keys {
        mock.set_fault(
            key,
            GrpcFault::RateLimited {
                retry_delay_secs: 20,
            },
        );
    }
    let addr = start_upstream(mock.clone()).await;
    let pool = KeyPool::builder().keys(&keys).build().unwrap();
    let store = MemoryStore::new();
    let client = ServiceBuilder::new()
        .layer(UsageLayer::new(store.clone()))
        .layer(
            RetryLayer::new()
                .base_delay(Duration::from_millis(1))
                // tonic's `Body` has no `From<Bytes>`: its constructor rebuilds each attempt's body.
                .replay_with(tonic::body::Body::new),
        )
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(channel(addr).await);

    let status = generate(client.clone(), "hi").await.unwrap_err();
    let record = &store.records()[0];
    assert_eq!(record.grpc_status, Some(Code::ResourceExhausted as u32));
    assert!(
        !record.success,
        "a failed gRPC call is not a success, whatever its HTTP status"
    );
    assert_eq!(record.attempts, 2);
    // Both answers came as HTTP 200 with `grpc-status: 8`: rate limited by their class, not
    // their status, and every store counts them so.
    assert!(record
        .attempt_log
        .iter()
        .all(|a| a.status == Some(200) && a.class == Some("rate_limited")));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    sqlite.record(record.clone());
    sqlite.flush().unwrap();
    let stores: [(&str, &dyn StatsStore); 2] = [("memory", &store), ("sqlite", &sqlite)];
    for (name, stats) in stores {
        let hour = stats.summary().await.unwrap().last_hour;
        assert_eq!((hour.calls, hour.successes), (1, 0), "{name}");
        assert_eq!(
            (hour.attempts, hour.rate_limited_attempts),
            (2, 2),
            "{name}"
        );
        let day = Window::last(Duration::from_secs(86_400));
        let top = stats.top_rate_limited_keys(day, 10).await.unwrap();
        assert_eq!(top.len(), 2, "{name}");
    }
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = RpcStatus::decode(status.details()).unwrap();
    assert!(details
        .details
        .iter()
        .any(|d| d.type_url.ends_with("RetryInfo")));
    assert_eq!(mock.keys_seen().len(), 2);

    // Now every key is cooling down: the layer answers by itself, in gRPC, without a call.
    let status = generate(client, "hi").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(mock.keys_seen().len(), 2);
    // Its RetryInfo says when the first key is back.
    let details = RpcStatus::decode(status.details()).unwrap();
    let retry_info = details
        .details
        .iter()
        .find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))
        .map(|d| RetryInfo::decode(&d.value[..]).unwrap())
        .expect("a RetryInfo");
    let seconds = retry_info.retry_delay.unwrap().seconds;
    assert!((1..=20).contains(&seconds), "{seconds}");
}

#[tokio::test]
async fn the_layers_wrap_a_tonic_server() {
    // The server side: someone's own tonic service (here the mock, which reads the key from
    // its metadata) behind the layers; its callers send no key at all.
    let mock = MockGenerativeService::default();
    let keys = test_keys(3);
    mock.set_fault(
        &keys[0],
        GrpcFault::RateLimited {
            retry_delay_secs: 45,
        },
    );
    mock.set_fault(&keys[1], GrpcFault::Unavailable);
    let pool = KeyPool::builder().keys(&keys).build().unwrap();
    let store = MemoryStore::new();
    let layers = ServiceBuilder::new()
        .layer(UsageLayer::new(store.clone()))
        .layer(
            RetryLayer::new()
                .base_delay(Duration::from_millis(1))
                // tonic's `Body` has no `From<Bytes>`: its constructor rebuilds each attempt's body.
                .replay_with(tonic::body::Body::new),
        )
        .layer(KeyRotationLayer::new(pool.clone()))
        .into_inner();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .layer(layers)
            .add_service(mock.clone())
            .serve_with_incoming(incoming),
    );

    let res = generate(channel(addr).await, "through the server")
        .await
        .unwrap();
    assert_eq!(answer_text(&res), "echo: through the server");
    assert_eq!(
        mock.keys_seen(),
        [
            Some(keys[0].clone()),
            Some(keys[1].clone()),
            Some(keys[2].clone())
        ]
    );
    assert!(matches!(
        key_status(&pool, &keys[0]),
        KeyStatus::CoolingDown(_)
    ));
    // UNAVAILABLE is the model's trouble, not the key's.
    assert_eq!(key_status(&pool, &keys[1]), KeyStatus::Active);
    let record = &store.records()[0];
    assert_eq!(record.attempts, 3);
    assert_eq!(
        record
            .attempt_log
            .iter()
            .map(|a| a.class)
            .collect::<Vec<_>>(),
        [Some("rate_limited"), Some("overloaded"), None]
    );
    assert_eq!(record.grpc_status, Some(0));
}
