//! OpenAI → Gemini request conversion: each OpenAI feature lands where Gemini expects it, and
//! bad input is named precisely.

use gemini_balance::openai::{
    chat_request_to_gemini, embeddings_request_to_gemini, ChatOptions, ModelRules,
};
use serde_json::{json, Value};

fn convert(req: Value) -> Value {
    chat_request_to_gemini(&req, &ChatOptions::default())
        .unwrap()
        .body
}

fn error_param(req: Value) -> String {
    chat_request_to_gemini(&req, &ChatOptions::default())
        .unwrap_err()
        .param
}

#[test]
fn system_and_developer_messages_become_the_system_instruction() {
    let body = convert(json!({"model": "m", "messages": [
        {"role": "system", "content": "Rule one."},
        {"role": "developer", "content": [{"type": "text", "text": "Rule two."}]},
        {"role": "user", "content": "Hi"}
    ]}));
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Rule one."}, {"text": "Rule two."}]})
    );
    assert_eq!(body["contents"].as_array().unwrap().len(), 1);
}

#[test]
fn tool_calls_keep_their_text_and_results_are_function_responses() {
    let body = convert(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny"}
    ]}));
    assert_eq!(
        body["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "Let me check."},
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}
        ]})
    );
    // Parallel results merge into one turn, each named after its call.
    assert_eq!(
        body["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "weather", "response": {"content": "sunny"}}}
        ]})
    );
}

#[test]
fn images_inline_or_to_fetch() {
    let chat = chat_request_to_gemini(
        &json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
        ]}]}),
        &ChatOptions::default(),
    )
    .unwrap();
    assert_eq!(
        chat.body["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}})
    );
    assert_eq!(chat.remote_images.len(), 1);
    assert_eq!(chat.remote_images[0].url, "https://example.com/cat.png");
    assert_eq!(chat.remote_images[0].pointer, "/contents/0/parts/2");
    assert!(chat.body.pointer(&chat.remote_images[0].pointer).is_some());
}

#[test]
fn inline_data_must_be_base64_gemini_decodes() {
    let image = |data: &str| {
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}}
        ]}]})
    };
    // Standard or URL-safe alphabet, padded or not: what proto3 JSON accepts for `bytes`.
    for good in ["aGk=", "aGk", "+/+/", "-_-_", "iVBORw0KGgo="] {
        let body = convert(image(good));
        assert_eq!(body["contents"][0]["parts"][1]["inlineData"]["data"], good);
    }
    for bad in [
        "!!!not base64!!!",
        "aGk=A",
        "aGk==x",
        "a",
        "aGk %3D",
        "aG\nk=",
        "+/-_",
        "",
    ] {
        let error = chat_request_to_gemini(&image(bad), &ChatOptions::default()).unwrap_err();
        assert_eq!(
            error.param, "messages[0].content[1].image_url.url",
            "{bad:?}"
        );
        assert!(
            error.message.contains("base64") || error.message.contains("empty"),
            "{error}"
        );
    }
    let audio = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "not base64!", "format": "wav"}}
    ]}]});
    assert_eq!(
        error_param(audio),
        "messages[0].content[0].input_audio.data"
    );
}

#[test]
fn tools_tool_choice_and_response_format() {
    let body = convert(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "lookup", "description": "Find", "parameters": {
                "type": "object", "$schema": "x", "additionalProperties": false,
                "properties": {"q": {"type": "string", "minLength": 1, "examples": ["a"]}},
                "required": ["q"]}}},
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {
            "type": "object", "properties": {"ok": {"type": "boolean"}}, "additionalProperties": false}}}
    }));
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [
            {"name": "lookup", "description": "Find", "parameters": {
                "type": "object", "properties": {"q": {"type": "string", "minLength": 1}}, "required": ["q"]}},
            {"name": "ping"}
        ]}])
    );
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}})
    );
    assert_eq!(
        body["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        body["generationConfig"]["responseSchema"],
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}}})
    );
    for (choice, mode) in [("none", "NONE"), ("auto", "AUTO"), ("required", "ANY")] {
        let body = convert(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice}),
        );
        assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], mode);
    }
}

#[test]
fn generation_parameters() {
    let body = convert(json!({
        "model": "m", "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.2, "top_p": 0.9, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.1,
        "max_tokens": 50, "max_completion_tokens": 80, "stop": ["A", "B"], "n": 2,
        "reasoning_effort": "low", "user": "ignored", "stream": true,
        "stream_options": {"include_usage": true}
    }));
    assert_eq!(
        body["generationConfig"],
        json!({"temperature": 0.2, "topP": 0.9, "seed": 7, "presencePenalty": 0.5,
               "frequencyPenalty": 0.1, "maxOutputTokens": 80, "candidateCount": 2,
               "stopSequences": ["A", "B"], "thinkingConfig": {"thinkingBudget": 1024}})
    );
    let chat = chat_request_to_gemini(
        &json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true,
                "stream_options": {"include_usage": true}, "temperature": null}),
        &ChatOptions::default(),
    )
    .unwrap();
    assert!(chat.stream && chat.include_usage);
    assert!(
        chat.body.get("generationConfig").is_none(),
        "nulls are not sent"
    );
}

#[test]
fn suffixes_shape_tools_and_thinking() {
    let opts = ChatOptions {
        rules: ModelRules {
            search_models: vec!["gemini-2.5-flash".into()],
            image_models: vec!["gemini-2.0-flash-exp".into()],
            ..Default::default()
        },
        show_thinking: true,
        thinking_budgets: [("gemini-2.5-flash".to_owned(), 2048)].into(),
        ..Default::default()
    };
    let req = |model: &str| {
        json!({"model": model, "messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "x"}]})
    };
    let search = chat_request_to_gemini(&req("gemini-2.5-flash-search"), &opts).unwrap();
    assert_eq!(search.model.upstream, "gemini-2.5-flash");
    assert_eq!(search.body["tools"], json!([{"googleSearch": {}}]));
    // The budget map is looked up by the real model (✎ the Python server used the suffixed name).
    assert_eq!(
        search.body["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
    let off = chat_request_to_gemini(&req("gemini-2.5-flash-search-non-thinking"), &opts).unwrap();
    assert_eq!(off.model.upstream, "gemini-2.5-flash");
    assert_eq!(off.body["tools"], json!([{"googleSearch": {}}]));
    assert_eq!(
        off.body["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 0})
    );
    let pro = chat_request_to_gemini(&req("gemini-2.5-pro-non-thinking"), &opts).unwrap();
    assert_eq!(
        pro.body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        128
    );
    let image = chat_request_to_gemini(&req("gemini-2.0-flash-exp-image"), &opts).unwrap();
    assert!(image.body.get("systemInstruction").is_none());
    assert_eq!(
        image.body["generationConfig"]["responseModalities"],
        json!(["TEXT", "IMAGE"])
    );
}

#[test]
fn bad_input_names_the_field() {
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (json!({"model": "m", "messages": []}), "messages"),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5}),
            "stop",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}),
            "n",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"}),
            "reasoning_effort",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "retrieval"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}),
            "response_format.type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": "only system"}]}),
            "messages",
        ),
    ];
    for (req, param) in cases {
        assert_eq!(error_param(req.clone()), param, "{req}");
    }
}

#[test]
fn embeddings() {
    let e = embeddings_request_to_gemini(
        &json!({"model": "models/text-embedding-004", "input": "hello", "dimensions": 256}),
    )
    .unwrap();
    assert_eq!(e.model, "text-embedding-004");
    assert_eq!(
        e.body,
        json!({"requests": [{"model": "models/text-embedding-004",
            "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 256}]})
    );
    assert_eq!(
        embeddings_request_to_gemini(&json!({"model": "e", "input": [[1, 2]]}))
            .unwrap_err()
            .param,
        "input[0]"
    );
    assert_eq!(
        embeddings_request_to_gemini(&json!({"model": "e"}))
            .unwrap_err()
            .param,
        "input"
    );
}
