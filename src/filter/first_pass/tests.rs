use super::*;
use crate::filter::check::{filter_value, Checked};
use crate::filter::drop_list::DropList;
use crate::filter::schema::Field;

const SHAPES: [Shape; 7] = [
    Shape::GenerateContent,
    Shape::StreamGenerateContent,
    Shape::CountTokens,
    Shape::EmbedContent,
    Shape::BatchEmbedContents,
    Shape::ChatCompletions,
    Shape::Embeddings,
];

/// What the full walk says of a body: `Some(true)` unchanged, `Some(false)` changed or
/// refused, `None` not JSON.
fn walk(body: &str, shape: Shape) -> Option<bool> {
    let mut value: serde_json::Value = serde_json::from_str(body).ok()?;
    let unchanged = matches!(
        filter_value(&mut value, shape, None, &DropList::new()),
        Checked::Unchanged
    );
    Some(unchanged)
}

/// The pass's promise: "clean" only where the walk leaves the body unchanged.
fn assert_never_wrongly_clean(body: &str, shape: Shape) -> bool {
    let clean = first_pass(body.as_bytes(), shape).is_some();
    if clean {
        assert_eq!(walk(body, shape), Some(true), "{shape:?}: {body}");
    }
    clean
}

#[test]
fn usual_bodies_are_clean() {
    let gemini = r#"{"contents":[{"role":"user","parts":[{"text":"Write one sentence."}]}],
        "generationConfig":{"temperature":0.7,"maxOutputTokens":256,"topP":0.95,"stopSequences":["END"]},
        "safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"OFF"}],
        "tools":[{"functionDeclarations":[{"name":"f","parameters":{"type":"object","x":null}}]}],
        "toolConfig":{"functionCallingConfig":{"mode":"AUTO"}},"unknownField":{"a":[null]}}"#;
    assert_eq!(
        first_pass(gemini.as_bytes(), Shape::GenerateContent),
        Some(Clean { model: None })
    );
    let chat = r#"{"model":"gemini-2.0-flash","messages":[{"role":"system","content":"be brief"},
        {"role":"user","content":[{"type":"text","text":"hi"}]}],"temperature":1,"stream":true,
        "stream_options":{"include_usage":true}}"#;
    assert_eq!(
        first_pass(chat.as_bytes(), Shape::ChatCompletions),
        Some(Clean {
            model: Some("gemini-2.0-flash".to_owned())
        })
    );
    for (body, shape) in [
        (gemini, Shape::GenerateContent),
        (chat, Shape::ChatCompletions),
    ] {
        assert_eq!(walk(body, shape), Some(true));
    }
}

#[test]
fn what_the_walk_changes_or_refuses_is_a_doubt() {
    for (body, shape) in [
        // A null dropped, a number coerced, a lone stop string listed, a float integer.
        (
            r#"{"contents":[{"parts":[{"text":"a"}]}],"x":null}"#,
            Shape::GenerateContent,
        ),
        (
            r#"{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"temperature":"0.5"}}"#,
            Shape::GenerateContent,
        ),
        (
            r#"{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"stopSequences":"END"}}"#,
            Shape::GenerateContent,
        ),
        (
            r#"{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"maxOutputTokens":100.0}}"#,
            Shape::GenerateContent,
        ),
        // An empty part dropped; an empty contents list, a missing field, a wrong type refused.
        (
            r#"{"contents":[{"parts":[{"text":"a"},{}]}]}"#,
            Shape::GenerateContent,
        ),
        (r#"{"contents":[]}"#, Shape::GenerateContent),
        (r#"{"contents":[{"role":"user"}]}"#, Shape::GenerateContent),
        (
            r#"{"contents":[{"parts":[{"text":7}]}]}"#,
            Shape::GenerateContent,
        ),
        (r#"{"contents":"hi"}"#, Shape::GenerateContent),
        (r#"[1]"#, Shape::GenerateContent),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"END"}"#,
            Shape::ChatCompletions,
        ),
        (
            r#"{"model":7,"messages":[{"role":"user","content":"hi"}]}"#,
            Shape::ChatCompletions,
        ),
        // Neither of countTokens' alternatives.
        (r#"{}"#, Shape::CountTokens),
    ] {
        assert!(
            first_pass(body.as_bytes(), shape).is_none(),
            "{shape:?}: {body}"
        );
        assert_eq!(walk(body, shape), Some(false), "{shape:?}: {body}");
    }
    // A duplicate known field is left to the walk, which sees only the last one.
    let duplicate =
        r#"{"contents":[{"parts":[{"text":"a"}]}],"contents":[{"parts":[{"text":"b"}]}]}"#;
    assert!(first_pass(duplicate.as_bytes(), Shape::GenerateContent).is_none());
    // Not JSON, or JSON followed by more: the walk's business too.
    assert!(first_pass(b"{\"contents\":", Shape::GenerateContent).is_none());
    assert!(first_pass(
        br#"{"contents":[{"parts":[{"text":"a"}]}]} x"#,
        Shape::GenerateContent
    )
    .is_none());
}

/// A small deterministic generator (xorshift), so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// A JSON value of type `ty` as text, now and then off the schema (`odd` per mille).
fn value(rng: &mut Rng, ty: Ty, depth: u32, odd: u64) -> String {
    if rng.chance(odd) {
        return rng
            .pick(&[
                "null",
                "\"0.5\"",
                "\"x\"",
                "7",
                "1.0",
                "2.5",
                "true",
                "[]",
                "{}",
                "[null]",
                "[\"a\",1]",
                "{\"k\":null}",
            ])
            .to_owned();
    }
    match ty {
        Ty::Str => "\"s\\\"x\"".to_owned(),
        Ty::Num => rng.pick(&["0.7", "1", "-3"]).to_owned(),
        Ty::Int => rng.pick(&["256", "0", "-1"]).to_owned(),
        Ty::Bool => "true".to_owned(),
        Ty::StrList => rng.pick(&["[\"END\"]", "[]", "[\"a\",\"b\"]"]).to_owned(),
        Ty::Opaque => rng
            .pick(&["{\"type\":\"object\",\"n\":null}", "[1,null]", "\"o\"", "3"])
            .to_owned(),
        Ty::Obj(schema) => object(rng, schema, depth + 1, odd),
        Ty::Arr(item) => array(rng, *item, depth, odd),
        Ty::StrOrArr(item) => {
            if rng.chance(500) {
                "\"text\"".to_owned()
            } else {
                array(rng, *item, depth, odd)
            }
        }
        Ty::StrOrObj(schema) => {
            if rng.chance(500) {
                "\"auto\"".to_owned()
            } else {
                object(rng, schema, depth + 1, odd)
            }
        }
    }
}

fn array(rng: &mut Rng, item: Ty, depth: u32, odd: u64) -> String {
    let n = if depth > 4 {
        0
    } else {
        rng.next() % 3 + u64::from(rng.chance(900))
    };
    let items: Vec<String> = (0..n).map(|_| value(rng, item, depth, odd)).collect();
    format!("[{}]", items.join(","))
}

fn object(rng: &mut Rng, schema: &Obj, depth: u32, odd: u64) -> String {
    let mut members = Vec::new();
    for field in schema.fields {
        let Field {
            name,
            alias,
            ty,
            req,
        } = *field;
        let wanted = match req {
            _ if depth > 5 => req != Req::Optional && rng.chance(990),
            Req::Optional => rng.chance(350),
            _ => rng.chance(990),
        };
        if !wanted {
            continue;
        }
        let key = match alias {
            Some(alias) if rng.chance(200) => alias,
            _ => name,
        };
        members.push(format!("\"{key}\":{}", value(rng, ty, depth, odd)));
        if rng.chance(odd / 4) {
            // The same field twice, or under its other spelling.
            let again = alias.filter(|_| rng.chance(500)).unwrap_or(name);
            members.push(format!("\"{again}\":{}", value(rng, ty, depth, odd)));
        }
    }
    if rng.chance(150) {
        members.push(format!(
            "\"extraField\":{}",
            rng.pick(&["1", "{\"a\":null}", "null", "[null]"])
        ));
    }
    // Object members in any order.
    for i in (1..members.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        members.swap(i, j);
    }
    format!("{{{}}}", members.join(","))
}

#[test]
fn random_bodies_are_never_wrongly_clean() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for shape in SHAPES {
        let (mut clean, mut total) = (0, 0);
        for odd in [0, 5, 30, 120] {
            for _ in 0..1500 {
                let body = object(&mut rng, shape.schema(), 0, odd);
                total += 1;
                if assert_never_wrongly_clean(&body, shape) {
                    clean += 1;
                } else if odd == 0 {
                    // On the schema (no duplicates then), only what the walk changes is a doubt.
                    assert_ne!(
                        walk(&body, shape),
                        Some(true),
                        "{shape:?}: a clean body taken for a doubt: {body}"
                    );
                }
            }
        }
        // The clean path is exercised, not only the doubts.
        assert!(clean * 10 > total, "{shape:?}: {clean} of {total} clean");
    }
}
