//! The requests of the fuzz run, generated from a seeded PRNG: bodies for every API route
//! (valid ones, then mutated as JSON and as bytes), odd paths, methods and query strings, and
//! raw HTTP/1.1 heads that play with framing and header bytes.

use base64::Engine;
use fastrand::Rng;
use serde_json::{json, Map, Value};

/// How a case goes over the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// reqwest over HTTP/1.1.
    Http1,
    /// reqwest over HTTP/2 (prior knowledge).
    Http2,
    /// Bytes written to a socket as they are. `complete`: the request is whole, so the server
    /// must answer it; otherwise the socket's write side is shut after it, and closing the
    /// connection without an answer is fine.
    Raw { complete: bool },
}

/// One generated request.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the generator meant to test (for the report).
    pub family: &'static str,
    pub transport: Transport,
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// The request line's version (raw cases).
    pub version: &'static str,
    /// Headers in order (raw cases: every header, framing included; reqwest adds its own
    /// `host`, `content-length` and `accept`).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Case {
    fn new(family: &'static str, method: &str, target: String) -> Case {
        Case {
            family,
            transport: Transport::Http1,
            method: method.to_owned(),
            target,
            version: "HTTP/1.1",
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
    }
}

/// What the generator needs to know of the run.
pub struct Ctx {
    /// A client token the proxy accepts.
    pub token: String,
    /// `127.0.0.1:PORT` of the proxy (absolute-form targets, `Host`).
    pub authority: String,
}

/// A PNG signature and a few bytes: a "valid" inline image as far as the proxy can tell.
const PICTURE: &[u8] = b"\x89PNG\r\n\x1a\n fuzz";

/// One case, chosen by `rng`.
pub fn generate(rng: &mut Rng, ctx: &Ctx) -> Case {
    let mut case = match rng.u8(..100) {
        0..=29 => gemini(rng, ctx),
        30..=59 => openai(rng, ctx),
        60..=71 => odd_path(rng, ctx),
        72..=86 => odd_head(rng, ctx),
        _ => other_route(rng, ctx),
    };
    if case.transport == Transport::Http1 && rng.u8(..100) < 15 {
        case.transport = Transport::Http2;
    }
    case
}

// ---------------------------------------------------------------------------------------------
// Gemini's own API

const MOUNTS: &[&str] = &["/v1beta", "/gemini/v1beta", "/v1"];

fn gemini(rng: &mut Rng, ctx: &Ctx) -> Case {
    let mut case = gemini_request(rng, ctx);
    maybe_raw(rng, ctx, &mut case);
    case
}

/// A Gemini request as an SDK would send it, then mutated.
fn gemini_request(rng: &mut Rng, ctx: &Ctx) -> Case {
    let mount = pick(rng, MOUNTS);
    let action = pick(
        rng,
        &[
            "generateContent",
            "generateContent",
            "streamGenerateContent",
            "streamGenerateContent",
            "countTokens",
            "embedContent",
            "batchEmbedContents",
            "predict",
        ],
    );
    let model = match rng.u8(..100) {
        0..=69 if action.contains("mbed") => "text-embedding-004".to_owned(),
        0..=69 => "gemini-2.0-flash".to_owned(),
        70..=79 => "gemini-2.5-flash".to_owned(),
        80..=84 => "no-such-model".to_owned(),
        _ => odd_model(rng),
    };
    let colon = pick(rng, &[":", ":", ":", "%3A", "%3a"]);
    let mut target = format!("{mount}/models/{model}{colon}{action}");
    let mut query = Vec::new();
    if action == "streamGenerateContent" && rng.u8(..100) < 75 {
        query.push("alt=sse".to_owned());
    }
    if rng.u8(..100) < 15 {
        query.push(odd_query_pair(rng));
    }
    let body = match action {
        "generateContent" | "streamGenerateContent" | "predict" => generate_body(rng),
        "countTokens" if rng.bool() => json!({ "generateContentRequest": generate_body(rng) }),
        "countTokens" => json!({ "contents": contents(rng) }),
        "embedContent" => embed_body(rng),
        _ => json!({ "requests": (0..rng.usize(1..4)).map(|_| {
            let mut r = embed_body(rng);
            r["model"] = json!(format!("models/{model}"));
            r
        }).collect::<Vec<_>>() }),
    };
    let mut case = Case::new("gemini", "POST", String::new());
    credentials(rng, ctx, false, &mut query, &mut case);
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query.join("&"));
    }
    case.target = target;
    content_type(rng, &mut case);
    case.body = mutated(rng, body);
    case
}

fn generate_body(rng: &mut Rng) -> Value {
    let mut body = Map::new();
    body.insert("contents".into(), contents(rng));
    if rng.u8(..100) < 40 {
        let mut config = Map::new();
        for (name, value) in [
            ("temperature", json!(rng.f64() * 2.0)),
            ("topP", json!(rng.f64())),
            ("topK", json!(rng.u32(1..64))),
            ("maxOutputTokens", json!(rng.u32(1..8192))),
            ("candidateCount", json!(1)),
            ("stopSequences", json!(["END"])),
            ("responseMimeType", json!("application/json")),
            ("thinkingConfig", json!({ "thinkingBudget": 0 })),
        ] {
            if rng.bool() {
                config.insert(name.into(), value);
            }
        }
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if rng.u8(..100) < 20 {
        body.insert(
            "systemInstruction".into(),
            json!({ "parts": [{ "text": text(rng) }] }),
        );
    }
    if rng.u8(..100) < 20 {
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": [{
                "name": "get_weather",
                "description": "the weather",
                "parameters": schema(rng, 0),
            }] }]),
        );
    }
    if rng.u8(..100) < 10 {
        body.insert(
            "safetySettings".into(),
            json!([{ "category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE" }]),
        );
    }
    if rng.u8(..100) < 10 {
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": { "mode": pick(rng, &["AUTO", "ANY", "NONE", "?"]) } }),
        );
    }
    Value::Object(body)
}

fn contents(rng: &mut Rng) -> Value {
    let turns = rng.usize(1..4);
    Value::Array(
        (0..turns)
            .map(|i| {
                let role = if i % 2 == 0 { "user" } else { "model" };
                let parts: Vec<Value> = (0..rng.usize(1..3)).map(|_| part(rng)).collect();
                json!({ "role": role, "parts": parts })
            })
            .collect(),
    )
}

fn part(rng: &mut Rng) -> Value {
    match rng.u8(..10) {
        0..=6 => json!({ "text": text(rng) }),
        7 => json!({ "inlineData": { "mimeType": "image/png", "data": base64_of(rng) } }),
        8 => json!({ "functionCall": { "name": "get_weather", "args": { "city": text(rng) } } }),
        _ => json!({ "fileData": { "mimeType": "image/png", "fileUri": "gs://bucket/x.png" } }),
    }
}

fn embed_body(rng: &mut Rng) -> Value {
    let mut body = json!({ "content": { "parts": [{ "text": text(rng) }] } });
    if rng.bool() {
        body["taskType"] = json!(pick(
            rng,
            &["RETRIEVAL_QUERY", "SEMANTIC_SIMILARITY", "nope"]
        ));
    }
    if rng.u8(..100) < 20 {
        body["outputDimensionality"] = json!(rng.u32(1..3073));
    }
    body
}

/// A JSON schema for function parameters, sometimes odd.
fn schema(rng: &mut Rng, depth: usize) -> Value {
    if depth > 3 || rng.u8(..100) < 30 {
        return json!({ "type": pick(rng, &["string", "integer", "number", "boolean", "null", "?"]) });
    }
    let mut properties = Map::new();
    for i in 0..rng.usize(0..4) {
        properties.insert(format!("p{i}"), schema(rng, depth + 1));
    }
    let mut schema = json!({ "type": "object", "properties": properties });
    if rng.bool() {
        schema["required"] = json!(["p0"]);
    }
    if rng.u8(..100) < 20 {
        schema["additionalProperties"] = json!(false);
        schema["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    }
    if rng.u8(..100) < 10 {
        schema["anyOf"] = json!([{ "type": "string" }, { "$ref": "#/definitions/x" }]);
    }
    schema
}

// ---------------------------------------------------------------------------------------------
// OpenAI's API (converted, and passed through to the upstream's OpenAI endpoint)

fn openai(rng: &mut Rng, ctx: &Ctx) -> Case {
    let mut case = openai_request(rng, ctx);
    maybe_raw(rng, ctx, &mut case);
    case
}

/// An OpenAI request as an SDK would send it, then mutated.
fn openai_request(rng: &mut Rng, ctx: &Ctx) -> Case {
    let embeddings = rng.u8(..100) < 25;
    let prefix = pick(rng, &["/v1", "/v1", "/hf/v1", "/openai/v1"]);
    let route = if embeddings {
        "embeddings"
    } else {
        "chat/completions"
    };
    let slash = if rng.u8(..100) < 5 { "/" } else { "" };
    let mut query = Vec::new();
    if rng.u8(..100) < 10 {
        query.push(odd_query_pair(rng));
    }
    let mut case = Case::new("openai", "POST", String::new());
    credentials(rng, ctx, true, &mut query, &mut case);
    let mut target = format!("{prefix}/{route}{slash}");
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query.join("&"));
    }
    case.target = target;
    content_type(rng, &mut case);
    let body = if embeddings {
        embeddings_body(rng)
    } else {
        chat_body(rng)
    };
    case.body = mutated(rng, body);
    case
}

/// An optional chat field and how to make a value for it.
type Optional = (&'static str, fn(&mut Rng) -> Value);

fn chat_body(rng: &mut Rng) -> Value {
    let model = match rng.u8(..100) {
        0..=69 => json!("gemini-2.0-flash"),
        70..=74 => json!("gemini-2.5-flash-search"),
        75..=79 => json!("models/gemini-2.0-flash"),
        80..=84 => json!(odd_model(rng)),
        85..=89 => json!(""),
        90..=94 => json!(rng.i64(..)),
        _ => Value::Null,
    };
    let mut messages = Vec::new();
    if rng.u8(..100) < 30 {
        messages.push(json!({ "role": pick(rng, &["system", "developer"]), "content": text(rng) }));
    }
    messages.push(user_message(rng));
    if rng.u8(..100) < 25 {
        messages.push(json!({
            "role": "assistant",
            "content": if rng.bool() { Value::Null } else { json!(text(rng)) },
            "tool_calls": [{
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": pick(rng, &["{\"city\":\"Paris\"}", "{", "[]", "", "null", "\"x\""]),
                },
            }],
        }));
        messages.push(json!({
            "role": "tool",
            "tool_call_id": pick(rng, &["call_1", "call_unknown"]),
            "content": pick(rng, &["{\"temp\": 21}", "sunny", ""]),
        }));
        if rng.bool() {
            messages.push(user_message(rng));
        }
    }
    let mut body = json!({ "model": model, "messages": messages });
    let optional: [Optional; 14] = [
        ("stream", |r| json!(r.bool())),
        ("stream_options", |r| json!({ "include_usage": r.bool() })),
        ("temperature", |r| json!(r.f64() * 2.0)),
        ("top_p", |r| json!(r.f64())),
        ("max_tokens", |r| json!(r.u32(1..4096))),
        ("max_completion_tokens", |r| json!(r.u32(1..4096))),
        ("n", |r| json!(r.u32(1..3))),
        ("stop", |r| {
            if r.bool() {
                json!("END")
            } else {
                json!(["a", "b"])
            }
        }),
        ("seed", |r| json!(r.i32(..))),
        ("presence_penalty", |r| json!(r.f64())),
        ("reasoning_effort", |r| {
            json!(pick(r, &["low", "medium", "high", "none", "max"]))
        }),
        ("response_format", response_format),
        ("tools", tools),
        ("tool_choice", |r| match r.u8(..5) {
            0 => json!("auto"),
            1 => json!("none"),
            2 => json!("required"),
            3 => json!({ "type": "function", "function": { "name": "get_weather" } }),
            _ => json!({ "type": "function" }),
        }),
    ];
    for (name, value) in optional {
        if rng.u8(..100) < 25 {
            body[name] = value(rng);
        }
    }
    body
}

fn response_format(rng: &mut Rng) -> Value {
    match rng.u8(..4) {
        0 => json!({ "type": "text" }),
        1 => json!({ "type": "json_object" }),
        2 => {
            json!({ "type": "json_schema", "json_schema": { "name": "x", "schema": schema(rng, 0) } })
        }
        _ => json!({ "type": "json_schema" }),
    }
}

fn tools(rng: &mut Rng) -> Value {
    json!([{
        "type": pick(rng, &["function", "function", "code_interpreter"]),
        "function": {
            "name": pick(rng, &["get_weather", "", "a b", "get_weather"]),
            "description": text(rng),
            "parameters": schema(rng, 0),
        },
    }])
}

fn user_message(rng: &mut Rng) -> Value {
    if rng.u8(..100) < 50 {
        return json!({ "role": "user", "content": text(rng) });
    }
    let mut parts = vec![json!({ "type": "text", "text": text(rng) })];
    for _ in 0..rng.usize(0..3) {
        parts.push(match rng.u8(..10) {
            0..=5 => json!({ "type": "image_url", "image_url": { "url": image_url(rng) } }),
            6 => json!({ "type": "image_url", "image_url": image_url(rng) }),
            7 => json!({ "type": "input_audio", "input_audio": {
                "data": base64_of(rng),
                "format": pick(rng, &["wav", "mp3", "midi"]),
            } }),
            8 => json!({ "type": "file", "file": { "file_id": "f" } }),
            _ => json!({ "type": "text" }),
        });
    }
    json!({ "role": "user", "content": parts })
}

/// An image URL: a valid `data:` URL, one whose base64 is broken, or an `http(s)` URL the
/// proxy refuses without any lookup (loopback and private literals, `localhost`).
fn image_url(rng: &mut Rng) -> String {
    match rng.u8(..12) {
        0..=3 => format!("data:image/png;base64,{}", base64_of(rng)),
        4..=6 => format!("data:image/png;base64,{}", bad_base64(rng)),
        7 => "data:image/png,plain".to_owned(),
        8 => format!("data:;base64,{}", base64_of(rng)),
        9 => pick(
            rng,
            &[
                "http://127.0.0.1:1/cat.png",
                "http://[::1]/cat.png",
                "http://localhost:9/cat.png",
                "https://10.0.0.1/cat.png",
                "http://0.0.0.0/",
                "http://%zz/",
            ],
        )
        .to_owned(),
        10 => "javascript:alert(1)".to_owned(),
        _ => "data:".to_owned(),
    }
}

fn base64_of(rng: &mut Rng) -> String {
    let mut bytes = PICTURE.to_vec();
    for _ in 0..rng.usize(0..40) {
        bytes.push(rng.u8(..));
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn bad_base64(rng: &mut Rng) -> String {
    let good = base64_of(rng);
    match rng.u8(..8) {
        0 => "!!!not base64!!!".to_owned(),
        1 => format!("{good}A"),
        2 => format!("{}===", &good[..good.len() - 1]),
        3 => good.replace('A', "é"),
        4 => format!("{good}%%"),
        5 => good.replace('+', "-").replace('/', "_") + "$",
        6 => format!("{} {}", &good[..4], &good[4..]),
        _ => "=".repeat(rng.usize(1..9)),
    }
}

fn embeddings_body(rng: &mut Rng) -> Value {
    let input = match rng.u8(..6) {
        0..=2 => json!(text(rng)),
        3 => json!([text(rng), text(rng)]),
        4 => json!([1, 2, 3]),
        _ => json!([]),
    };
    let mut body = json!({ "model": pick(rng, &["text-embedding-004", "text-embedding-004", "", "x/y"]), "input": input });
    if rng.u8(..100) < 30 {
        body["dimensions"] = json!(rng.u32(1..3073));
    }
    if rng.u8(..100) < 20 {
        body["encoding_format"] = json!(pick(rng, &["float", "base64"]));
    }
    body
}

// ---------------------------------------------------------------------------------------------
// Odd paths, methods, query strings

const METHODS: &[&str] = &[
    "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "get", "FOO",
    "PROPFIND", "M-SEARCH",
];

fn odd_path(rng: &mut Rng, ctx: &Ctx) -> Case {
    let mut path = String::new();
    let prefix = pick(
        rng,
        &[
            "/v1beta",
            "/gemini/v1beta",
            "/v1",
            "/hf/v1",
            "/openai/v1",
            "/api",
            "",
            "/health",
            "/static",
            "/login",
        ],
    );
    path.push_str(prefix);
    for _ in 0..rng.usize(1..5) {
        path.push_str(pick(
            rng,
            &[
                "/models",
                "/models/gemini-2.0-flash:generateContent",
                "/models/gemini-2.0-flash%3AstreamGenerateContent",
                "/models/gemini-2.0-flash",
                "/chat/completions",
                "/embeddings",
                "/keys",
                "/stats/summary",
                "/config",
                "/..",
                "/.",
                "/%2e%2e",
                "/%2E",
                "//",
                "/%2F",
                "%2f..%2f",
                "/%00",
                "/%ff",
                "/%",
                "/%zz",
                "/%C3%A9",
                "/;x=1",
                "/~",
                "/%5C",
                "\\",
                "/a:b:c",
                "/models/:generateContent",
                "/models/gemini-2.0-flash:",
                "/*",
            ],
        ));
    }
    match rng.u8(..20) {
        0 => path.push_str(&"/x".repeat(rng.usize(100..5000))),
        1 => path.push_str(&"a".repeat(rng.usize(8000..70000))),
        2 => path.push_str("/é"),
        _ => {}
    }
    if path.is_empty() {
        path.push('/');
    }
    let mut query: Vec<String> = (0..rng.usize(0..4)).map(|_| odd_query_pair(rng)).collect();
    let method = pick(rng, METHODS);
    let mut case = Case::new("path", method, String::new());
    credentials(
        rng,
        ctx,
        prefix.contains("v1") && !prefix.contains("beta"),
        &mut query,
        &mut case,
    );
    let mut target = path;
    if !query.is_empty() || rng.u8(..100) < 5 {
        target.push('?');
        target.push_str(&query.join("&"));
    }
    case.target = target;
    if method != "GET" && method != "HEAD" && rng.bool() {
        content_type(rng, &mut case);
        let body = generate_body(rng);
        case.body = mutated(rng, body);
    }
    // The URL parser of a client would tidy these paths: they go raw.
    case.transport = Transport::Raw { complete: true };
    case.target = match rng.u8(..40) {
        0 => format!("http://{}{}", ctx.authority, case.target),
        1 => "*".to_owned(),
        2 => {
            case.method = "CONNECT".to_owned();
            ctx.authority.clone()
        }
        _ => case.target,
    };
    raw_framing(rng, &mut case);
    add_host(rng, ctx, &mut case);
    case
}

/// A query pair chosen to trip parsers: repeated and empty keys and alts, encodings.
fn odd_query_pair(rng: &mut Rng) -> String {
    pick(
        rng,
        &[
            "alt=sse",
            "alt=json",
            "alt=",
            "alt",
            "alt=sse&alt=json",
            "alt=proto",
            "%61lt=sse",
            "alt=%73se",
            "$alt=json;enum-encoding=int",
            "key=",
            "key",
            "key=%zz",
            "key=a&key=b",
            "=",
            "&&&",
            "a=%",
            "q=%00",
            "x=é",
            "pageSize=-1",
            "pageToken=%FF",
            "upload_protocol=raw",
        ],
    )
    .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Odd heads: framing, duplicated and non-ASCII headers, versions (raw HTTP/1.1)

fn odd_head(rng: &mut Rng, ctx: &Ctx) -> Case {
    let mut case = if rng.bool() {
        gemini_request(rng, ctx)
    } else {
        openai_request(rng, ctx)
    };
    case.family = "head";
    case.transport = Transport::Raw { complete: true };
    let mut framed = false;
    for _ in 0..rng.usize(1..4) {
        match rng.u8(..22) {
            0 => {
                case.header("content-type", b"application/json");
                case.header(
                    "content-type",
                    pick(rng, &["application/json", "text/plain"]),
                );
            }
            1 => {
                let len = case.body.len().to_string();
                case.header("content-length", &len);
                let other = if rng.bool() {
                    len
                } else {
                    (case.body.len() + 1).to_string()
                };
                case.header("content-length", other);
                framed = true;
            }
            2 => {
                let value = pick(rng, &["+5", " 5", "0x5", "-1", "5,5", "5, 6", "", "abc"]);
                case.header("content-length", value);
                // A length that parses may not be the body's.
                case.transport = Transport::Raw { complete: false };
                framed = true;
            }
            3 => {
                // Announces far more than is sent: the write side is shut after the body.
                let value = pick(
                    rng,
                    &[
                        "99999999999999999999",
                        "18446744073709551615",
                        "1000000000",
                        "21000000",
                    ],
                );
                case.header("content-length", value);
                case.transport = Transport::Raw { complete: false };
                framed = true;
            }
            4 => {
                case.header("transfer-encoding", "chunked");
                case.body = chunked(rng, &case.body);
                framed = true;
            }
            5 => {
                case.header("transfer-encoding", "chunked");
                case.header("content-length", case.body.len().to_string());
                case.body = chunked(rng, &case.body);
                framed = true;
            }
            6 => {
                let value = pick(
                    rng,
                    &[
                        "gzip, chunked",
                        "chunked, gzip",
                        "identity",
                        "Chunked",
                        "chunked;q=1",
                        " chunked",
                        "chunked, chunked",
                        "xchunked",
                    ],
                );
                case.header("transfer-encoding", value);
                case.body = chunked(rng, &case.body);
                framed = true;
            }
            7 => {
                case.header("transfer-encoding", "chunked");
                let mut body = chunked(rng, &case.body);
                match rng.u8(..4) {
                    0 => body.splice(0..0, b"zz\r\n".iter().copied()).for_each(drop),
                    1 => body
                        .splice(0..0, b"ffffffffffffffff\r\n".iter().copied())
                        .for_each(drop),
                    2 => body.truncate(body.len().saturating_sub(5)),
                    _ => {
                        body.truncate(body.len().saturating_sub(2));
                        body.extend_from_slice(b"x-trailer: 1\r\n\r\n");
                    }
                }
                case.body = body;
                // The server may still be waiting for the rest.
                case.transport = Transport::Raw { complete: false };
                framed = true;
            }
            8 => case.header("x-odd", non_ascii(rng)),
            9 => case.header(
                "content-type",
                [b"application/json; charset=".as_slice(), &non_ascii(rng)].concat(),
            ),
            10 => case.header(
                "x-goog-api-key",
                [ctx.token.as_bytes(), &non_ascii(rng)].concat(),
            ),
            11 => case.header(
                "authorization",
                [b"Bearer \xff".as_slice(), ctx.token.as_bytes()].concat(),
            ),
            12 => case.header(pick(rng, &["x bad", "x-bad ", "x\x01bad", "(x)"]), "1"),
            13 => {
                case.headers
                    .push(("x-folded".to_owned(), b"a\r\n b".to_vec()));
            }
            14 => {
                for i in 0..rng.usize(90..130) {
                    case.header(&format!("x-many-{i}"), "1");
                }
            }
            15 => {
                let n = if rng.bool() { 70_000 } else { 500_000 };
                case.header("x-big", "v".repeat(n));
            }
            16 => case.header("x-nul", b"a\0b"),
            17 => case.header("expect", "100-continue"),
            18 => case.header("content-encoding", pick(rng, &["gzip", "br", "x-unknown"])),
            19 => case.header(
                "accept-encoding",
                pick(
                    rng,
                    &["gzip", "br, zstd", "*;q=0", "identity;q=0", "\u{7f}"],
                ),
            ),
            20 => case.header("upgrade", pick(rng, &["h2c", "websocket"])),
            _ => {
                case.version = pick(
                    rng,
                    &["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "http/1.1", "HTTP/1.1 "],
                );
            }
        }
    }
    if !framed {
        case.header("content-length", case.body.len().to_string());
    }
    add_host(rng, ctx, &mut case);
    case
}

/// `body` in chunks of random sizes, sometimes with extensions, ended by the zero chunk.
fn chunked(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = rng.usize(1..=rest.len().min(4096));
        let ext = if rng.u8(..10) == 0 { ";ext=1" } else { "" };
        out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn non_ascii(rng: &mut Rng) -> Vec<u8> {
    let mut v = b"v".to_vec();
    for _ in 0..rng.usize(1..6) {
        v.push(rng.u8(0x80..));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// The other routes: health, admin API (never with the admin token), web admin, unknown paths

fn other_route(rng: &mut Rng, ctx: &Ctx) -> Case {
    let path = pick(
        rng,
        &[
            "/health",
            "/health/",
            "/api/keys",
            "/api/keys/delete",
            "/api/stats/summary",
            "/api/config",
            "/api/nope",
            "/v1beta/models",
            "/v1beta/models/gemini-2.0-flash",
            "/v1/models",
            "/hf/v1/models",
            "/openai/v1/models",
            "/openai/v1/images/generations",
            "/",
            "/login",
            "/logout",
            "/keys",
            "/static/app.js",
            "/favicon.ico",
            "/v2/models",
            "/v1beta/tunedModels",
            "/v1beta/files",
        ],
    );
    let method = pick(rng, METHODS);
    let mut query = Vec::new();
    if rng.u8(..100) < 20 {
        query.push(odd_query_pair(rng));
    }
    let mut case = Case::new("route", method, String::new());
    credentials(
        rng,
        ctx,
        path.contains("v1/") && !path.contains("beta"),
        &mut query,
        &mut case,
    );
    if path.starts_with("/api/") && rng.bool() {
        // A session cookie the web admin never handed out.
        case.header("cookie", "session=0123456789abcdef; csrf=x");
    }
    let mut target = path.to_owned();
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query.join("&"));
    }
    case.target = target;
    if !matches!(method, "GET" | "HEAD") && rng.bool() {
        content_type(rng, &mut case);
        case.body = match rng.u8(..4) {
            0 => b"token=abc".to_vec(),
            1 => mutated(rng, json!({ "keys": ["AIza-not-a-key"], "ids": [1, "x"] })),
            2 => mutated(rng, json!({ "auth_token": "x" })),
            _ => {
                let body = generate_body(rng);
                mutated(rng, body)
            }
        };
    }
    if !METHODS[..8].contains(&method) {
        case.transport = Transport::Raw { complete: true };
        raw_framing(rng, &mut case);
        add_host(rng, ctx, &mut case);
    } else {
        maybe_raw(rng, ctx, &mut case);
    }
    case
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Puts the client token where an API client would (or somewhere odd, or nowhere).
fn credentials(rng: &mut Rng, ctx: &Ctx, openai: bool, query: &mut Vec<String>, case: &mut Case) {
    let token = &ctx.token;
    match rng.u8(..100) {
        0..=59 if openai => case.header("authorization", format!("Bearer {token}")),
        0..=59 => case.header("x-goog-api-key", token),
        60..=69 => query.push(format!("key={token}")),
        70..=74 => {
            query.push("key=wrong".to_owned());
            query.push(format!("key={token}"));
        }
        75..=79 => {
            case.header("x-goog-api-key", token);
            case.header("authorization", format!("Bearer {token}"));
            query.push(format!("key={token}"));
        }
        80..=84 => {
            case.header("x-goog-api-key", "wrong");
            case.header("x-goog-api-key", token);
        }
        85..=87 => case.header("authorization", format!("bearer   {token}  ")),
        88..=90 => case.header("authorization", format!("Basic {token}")),
        91..=94 => case.header("x-goog-api-key", "sk-wrong"),
        _ => {}
    }
}

fn content_type(rng: &mut Rng, case: &mut Case) {
    let value = match rng.u8(..100) {
        0..=69 => "application/json",
        70..=74 => "application/json; charset=utf-8",
        75..=77 => "APPLICATION/JSON",
        78..=80 => "text/plain",
        81..=83 => "application/x-www-form-urlencoded",
        84..=85 => "multipart/form-data; boundary=x",
        86..=87 => "application/grpc",
        88..=89 => "application/merge-patch+json",
        90..=91 => "application/json; charset=latin1",
        _ => return,
    };
    case.header("content-type", value);
}

/// A quarter of the reqwest-able cases go raw instead (same request, written by hand).
fn maybe_raw(rng: &mut Rng, ctx: &Ctx, case: &mut Case) {
    if rng.u8(..100) < 25 {
        case.transport = Transport::Raw { complete: true };
        raw_framing(rng, case);
        add_host(rng, ctx, case);
    }
}

fn raw_framing(rng: &mut Rng, case: &mut Case) {
    if !case.body.is_empty() && rng.u8(..100) < 20 {
        case.header("transfer-encoding", "chunked");
        case.body = chunked(rng, &case.body);
    } else {
        case.header("content-length", case.body.len().to_string());
    }
}

fn add_host(rng: &mut Rng, ctx: &Ctx, case: &mut Case) {
    match rng.u8(..20) {
        0 => {}
        1 => {
            case.header("host", &ctx.authority);
            case.header("host", "evil.example");
        }
        2 => case.header("host", "evil.example"),
        _ => case.header("host", &ctx.authority),
    }
}

fn odd_model(rng: &mut Rng) -> String {
    match rng.u8(..10) {
        0 => String::new(),
        1 => "a".repeat(rng.usize(300..3000)),
        2 => "%2e%2e".to_owned(),
        3 => "gemini%2F..%2Fx".to_owned(),
        4 => "gemini-2.0-flash:generateContent".to_owned(),
        5 => "%F0%9F%98%80".to_owned(),
        6 => "gemini 2.0".replace(' ', "%20"),
        7 => "tunedModels/x".to_owned(),
        8 => "-".to_owned(),
        _ => "gemini-2.0-flash-thinking-search-nothinking".to_owned(),
    }
}

/// A text of every kind: plain, unicode, control characters, escapes, long.
fn text(rng: &mut Rng) -> String {
    match rng.u8(..20) {
        0 => String::new(),
        1 => "\u{202e}\u{0301}é😀\u{fffd}\u{feff}".to_owned(),
        2 => "\0\u{1}\u{7f}\t\r\n".to_owned(),
        3 => "\\u0000 \" \\ </script>".to_owned(),
        4 => "x".repeat(rng.usize(10_000..200_000)),
        5 => "data: [DONE]\n\ndata: {}\n\n".to_owned(),
        _ => format!("hello fuzz {}", rng.u32(..)),
    }
}

/// `body` serialized, then maybe changed: as a JSON value, then as bytes.
fn mutated(rng: &mut Rng, mut body: Value) -> Vec<u8> {
    let value_changes = match rng.u8(..100) {
        0..=39 => 0,
        40..=79 => 1,
        _ => rng.usize(2..5),
    };
    for _ in 0..value_changes {
        mutate_value(rng, &mut body);
    }
    let mut bytes = serde_json::to_vec(&body).unwrap();
    if rng.u8(..100) < 30 {
        for _ in 0..rng.usize(1..3) {
            mutate_bytes(rng, &mut bytes);
        }
    }
    bytes
}

/// Descends to a random node.
fn random_node<'a>(rng: &mut Rng, node: &'a mut Value) -> &'a mut Value {
    let len = match &*node {
        Value::Object(map) => map.len(),
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if len == 0 || rng.u8(..100) >= 70 {
        return node;
    }
    let i = rng.usize(..len);
    match node {
        Value::Object(map) => random_node(rng, map.values_mut().nth(i).unwrap()),
        Value::Array(items) => random_node(rng, &mut items[i]),
        _ => unreachable!("only containers have children"),
    }
}

fn mutate_value(rng: &mut Rng, body: &mut Value) {
    let node = random_node(rng, body);
    match rng.u8(..9) {
        0 => *node = Value::Null,
        1 => *node = any_value(rng, 0),
        2 => match node {
            Value::Object(map) if !map.is_empty() => {
                let key = map.keys().nth(rng.usize(..map.len())).cloned().unwrap();
                map.remove(&key);
            }
            Value::Array(items) if !items.is_empty() => {
                items.remove(rng.usize(..items.len()));
            }
            _ => *node = json!({}),
        },
        3 => {
            if let Value::Object(map) = node {
                let key = pick(
                    rng,
                    &[
                        "model",
                        "contents",
                        "messages",
                        "stream",
                        "role",
                        "parts",
                        "text",
                        "url",
                        "image_url",
                        "type",
                        "generationConfig",
                        "tools",
                        "",
                        "__proto__",
                    ],
                );
                map.insert(key.to_owned(), any_value(rng, 0));
            } else {
                *node = json!({ "x": node.take() });
            }
        }
        4 => {
            let mut inner = node.take();
            for _ in 0..rng.usize(1..200) {
                inner = if rng.bool() {
                    json!([inner])
                } else {
                    json!({ "a": inner })
                };
            }
            *node = inner;
        }
        5 => {
            let value = node.take();
            *node = json!([value.clone(), value]);
        }
        6 => *node = extreme_number(rng),
        7 => *node = json!(text(rng)),
        _ => *node = json!(true),
    }
}

fn any_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.u8(..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => extreme_number(rng),
        3 => json!(text(rng)),
        4 => json!(""),
        5 => json!(rng.i64(..)),
        6 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.usize(0..4))
                .map(|i| (format!("k{i}"), any_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

fn extreme_number(rng: &mut Rng) -> Value {
    match rng.u8(..8) {
        0 => json!(f64::MAX),
        1 => json!(f64::MIN_POSITIVE),
        2 => json!(-0.0),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1e300),
        6 => json!(-1),
        _ => json!(0.5),
    }
}

fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let at = rng.usize(..=bytes.len());
    let insert = |bytes: &mut Vec<u8>, what: &[u8]| {
        bytes.splice(at..at, what.iter().copied()).for_each(drop);
    };
    match rng.u8(..12) {
        0 => bytes.truncate(at),
        1 => insert(
            bytes,
            pick(
                rng,
                &[
                    &b"\xff"[..],
                    b"\xc0\xaf",
                    b"\xed\xa0\x80",
                    b"\xf8\x88\x80\x80\x80",
                    b"\x80",
                    b"\0",
                ],
            ),
        ),
        2 => insert(
            bytes,
            pick(
                rng,
                &[
                    &b"\"\\ud800\""[..],
                    b"1e999999",
                    b"123456789012345678901234567890123",
                    b"-",
                    b"NaN",
                    b",",
                    b"]",
                    b"}",
                    b"{",
                    b"\"",
                    b"\\",
                ],
            ),
        ),
        3 if !bytes.is_empty() => {
            let i = rng.usize(..bytes.len());
            bytes[i] ^= 1 << rng.u8(..8);
        }
        4 => {
            let depth = rng.usize(100..20_000);
            *bytes = [b"[".repeat(depth), b"]".repeat(depth)].concat();
        }
        5 => {
            let depth = rng.usize(100..20_000);
            *bytes = b"{\"contents\":".repeat(depth);
        }
        6 => {
            if let Some(i) = bytes.iter().position(|&b| b == b'{') {
                let dup = pick(
                    rng,
                    &[
                        &b"\"model\":\"x\","[..],
                        b"\"contents\":null,",
                        b"\"messages\":[],",
                        b"\"stream\":true,",
                    ],
                );
                bytes
                    .splice(i + 1..i + 1, dup.iter().copied())
                    .for_each(drop);
            }
        }
        7 => insert(bytes, b"\xef\xbb\xbf"),
        8 => bytes.extend_from_slice(pick(rng, &[&b"{}"[..], b",", b" garbage", b"\n\n\n"])),
        9 => bytes.clear(),
        10 => *bytes = b"null".to_vec(),
        _ => *bytes = pick(rng, &[&b"[]"[..], b"\"x\"", b"1", b"{\"a\":1}"]).to_vec(),
    }
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}
