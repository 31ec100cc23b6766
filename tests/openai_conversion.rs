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
        "model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}],
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
    // A model that does not think gets no thinking config: Gemini would refuse it.
    let body = convert(
        json!({"model": "gemini-2.0-flash", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "x"}]}),
    );
    assert!(body.get("generationConfig").is_none(), "{body}");
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

#[test]
fn thinking_config_only_for_models_that_think() {
    let opts = ChatOptions {
        show_thinking: true,
        ..Default::default()
    };
    let thinking = |model: &str| {
        let req = json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
        chat_request_to_gemini(&req, &opts).unwrap().body["generationConfig"]["thinkingConfig"]
            .clone()
    };
    // SHOW_THINKING_PROCESS asks the models that think for their thoughts.
    for model in ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview"] {
        assert_eq!(thinking(model), json!({"includeThoughts": true}), "{model}");
    }
    // Gemini answers 400 to any thinking config sent to a model that does not think.
    for model in [
        "gemini-2.0-flash",
        "gemini-2.0-flash-non-thinking",
        "gemini-2.5-flash-image-preview",
        "gemini-embedding-001",
        "m",
    ] {
        assert_eq!(thinking(model), Value::Null, "{model}");
    }
    // THINKING_MODELS declares one the name rule does not know.
    let declared = ChatOptions {
        rules: ModelRules {
            thinking_models: vec!["m".into()],
            ..Default::default()
        },
        ..opts.clone()
    };
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"});
    assert_eq!(
        chat_request_to_gemini(&req, &declared).unwrap().body["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 1024, "includeThoughts": true})
    );
}

#[test]
fn a_google_search_function_becomes_the_search_tool() {
    let search_fn = json!({"type": "function", "function": {"name": "googleSearch",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}});
    let lookup = json!({"type": "function", "function": {"name": "lookup"}});
    let req = |tools: Value| {
        json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "news"}],
               "tools": tools, "tool_choice": "auto"})
    };
    // Cherry Studio's search switch: Gemini's own search, no declaration, no tool choice.
    let chat = chat_request_to_gemini(&req(json!([search_fn])), &ChatOptions::default()).unwrap();
    assert_eq!(chat.body["tools"], json!([{"googleSearch": {}}]));
    assert!(chat.body.get("toolConfig").is_none());
    assert!(chat.search);
    // Next to real functions the functions win (Gemini refuses the mix), as in Gemini-Balance.
    let chat =
        chat_request_to_gemini(&req(json!([search_fn, lookup])), &ChatOptions::default()).unwrap();
    assert_eq!(
        chat.body["tools"],
        json!([{"functionDeclarations": [{"name": "lookup"}]}])
    );
    assert_eq!(
        chat.body["toolConfig"]["functionCallingConfig"]["mode"],
        "AUTO"
    );
    assert!(!chat.search);
    // JSON mode gets no built-in tools either.
    let mut json_mode = req(json!([search_fn]));
    json_mode["response_format"] = json!({"type": "json_object"});
    let chat = chat_request_to_gemini(&json_mode, &ChatOptions::default()).unwrap();
    assert!(chat.body.get("tools").is_none() && !chat.search);
}

#[test]
fn video_parts_become_inline_video() {
    let video = |format: &str, data: &str| {
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What happens?"},
            {"type": "input_video", "input_video": {"data": data, "format": format}}
        ]}]})
    };
    for (format, mime) in [
        ("mp4", "video/mp4"),
        ("MOV", "video/mov"),
        ("avi", "video/avi"),
        ("webm", "video/webm"),
    ] {
        let body = convert(video(format, "AAAAGGZ0eXA="));
        assert_eq!(
            body["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": mime, "data": "AAAAGGZ0eXA="}}),
            "{format}"
        );
    }
    let error = chat_request_to_gemini(&video("mkv", "AAAA"), &ChatOptions::default()).unwrap_err();
    assert_eq!(error.param, "messages[0].content[1].input_video.format");
    assert!(error.message.contains("mp4"), "{error}");
    let error =
        chat_request_to_gemini(&video("mp4", "not base64!"), &ChatOptions::default()).unwrap_err();
    assert_eq!(error.param, "messages[0].content[1].input_video.data");
}

#[test]
fn markdown_images_go_back_to_image_models() {
    let opts = ChatOptions {
        rules: ModelRules {
            image_models: vec!["gemini-2.0-flash-exp".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let messages = json!([
        {"role": "user", "content": "Draw a cat."},
        {"role": "assistant", "content": "Here it is:\n\n![image](data:image/png;base64,iVBORw0KGgo=)\n\n"},
        {"role": "user", "content": "Now this one ![a dog](https://example.com/dog.png) in blue, not ![x](ftp://x)"}
    ]);
    let chat = chat_request_to_gemini(
        &json!({"model": "gemini-2.0-flash-exp-image", "messages": messages}),
        &opts,
    )
    .unwrap();
    assert_eq!(
        chat.body["contents"][1]["parts"],
        json!([{"text": "Here it is:\n\n"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}])
    );
    assert_eq!(
        chat.body["contents"][2]["parts"][0],
        json!({"text": "Now this one "})
    );
    assert_eq!(
        chat.body["contents"][2]["parts"][2],
        json!({"text": " in blue, not ![x](ftp://x)"})
    );
    assert_eq!(chat.remote_images.len(), 1);
    let remote = &chat.remote_images[0];
    assert_eq!(remote.url, "https://example.com/dog.png");
    assert_eq!(remote.pointer, "/contents/2/parts/1");
    assert_eq!(
        remote.fallback_text.as_deref(),
        Some("![a dog](https://example.com/dog.png)")
    );
    // Any other model reads the text as it is.
    let chat = chat_request_to_gemini(
        &json!({"model": "gemini-2.0-flash", "messages": messages}),
        &opts,
    )
    .unwrap();
    assert_eq!(
        chat.body["contents"][1]["parts"],
        json!([{"text": messages[1]["content"]}])
    );
    assert!(chat.remote_images.is_empty());
}

#[test]
fn an_image_to_fetch_is_found_where_its_message_was_merged() {
    // A tool result and the next user message make one user turn: the image's place is in it.
    let chat = chat_request_to_gemini(
        &json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
            {"role": "user", "content": [{"type": "text", "text": "and this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}
        ]}),
        &ChatOptions::default(),
    )
    .unwrap();
    assert_eq!(chat.remote_images[0].pointer, "/contents/2/parts/2");
    assert_eq!(
        chat.body["contents"][2]["parts"][1],
        json!({"text": "and this?"})
    );
    assert_eq!(chat.remote_images[0].fallback_text, None);
}
