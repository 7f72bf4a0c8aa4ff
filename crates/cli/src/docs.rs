//! Reference docs generated from the code: `docs/CLI.md` from clap's
//! definitions, `docs/openapi.json` and `docs/API.md` from the API's. Tests
//! fail when the committed files are stale (`legacygpu docs cli > docs/CLI.md`,
//! `legacygpu docs openapi > docs/openapi.json`, `legacygpu docs api > docs/API.md`
//! refresh them).

use std::fmt::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use serde_json::Value;

use crate::args::Cli;

pub fn run(what: &str) -> anyhow::Result<ExitCode> {
    match what {
        "cli" => print!("{}", cli_markdown()),
        "api" => print!("{}", api_markdown()),
        _ => println!("{}", coordinator::openapi_json()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Every command's long help, in a stable width, environment values hidden.
pub fn cli_markdown() -> String {
    let mut out = String::from(
        "# The `legacygpu` command line\n\n\
         Generated from the code by `legacygpu docs cli`; a test fails when this file is stale.\n\n\
         Exit codes: 0 success; 1 an error (one line on stderr: unreachable coordinator, \
         refused request, unknown task…); 2 bad usage (flags that do not parse or do not go \
         together, values out of range); 3 a task ended without a result (failed, cancelled, \
         timed out; `demo` and `task submit --batch`: one did); 4 a task has not \
         finished within `--timeout`; 75 (`cluster start` on PostgreSQL) this coordinator \
         lost its leader lease and stopped: its supervisor restarts it as a standby.\n\n\
         Connection settings come from flags, then the environment (`LEGACYGPU_*`, `API_KEYS`), \
         then `~/.config/legacygpu/cli.json` (`{\"api_url\", \"api_key\", \"coordinator\", \"token\", \
         \"ca_hash\"}`).\n",
    );
    let mut root = Cli::command().term_width(100);
    root.build();
    walk(&root, "legacygpu", &mut out);
    out
}

fn walk(cmd: &clap::Command, path: &str, out: &mut String) {
    if cmd.is_hide_set() {
        return;
    }
    let mut shown = cmd.clone().term_width(100).mut_args(|a| a.hide_env_values(true));
    let help = shown.render_long_help().to_string();
    let _ = write!(out, "\n## `{path}`\n\n```text\n{}\n```\n", help.trim_end());
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

/// The HTTP API reference, from the OpenAPI document and the route table.
pub fn api_markdown() -> String {
    let doc: Value = serde_json::from_str(&coordinator::openapi_json()).unwrap_or(Value::Null);
    let mut out = String::from(API_INTRO);
    for (method, path, role) in coordinator::http_routes() {
        operation(&mut out, &method, path, role, &doc["paths"][path][method.to_lowercase()]);
    }
    out.push_str("\n# Schemas\n");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            schema_section(&mut out, name, schema);
        }
    }
    out
}

const API_INTRO: &str = "# The HTTP API\n\n\
    Generated from the code by `legacygpu docs api` (from the OpenAPI document the \
    coordinator serves at `/openapi.json`, also in `docs/openapi.json`; a browsable \
    version is at `/docs`). A test fails when this file is stale.\n\n\
    The API listens on port 8000 (`cluster start --http ADDR`). JSON in and out. \
    Authenticate with `Authorization: Bearer KEY` or `X-API-Key: KEY` (an `Authorization` \
    header of another form is refused with 401, not passed over); a key's role \
    (`read-only` < `client` < `admin`) must reach the route's. Without API keys the \
    cluster token is the admin key; without either, only loopback clients are served \
    (protected mode). Every failure has one body:\n\n\
    ```json\n{\"detail\": \"no task `t-9` is known\", \"error_code\": \"not_found\", \"status_code\": 404}\n```\n\n\
    with `retry_after_s` (and a `Retry-After` header) on `busy`, and `task_id` when a task is concerned. \
    What does not parse is refused in the same body before a handler runs: a body that is not JSON \
    (400), lacks `Content-Type: application/json` (415), does not fit the schema (422, all \
    `invalid_body`) or is over `--max-frame-bytes` (413, `payload_too_large`); a query string \
    that does not parse (400, `invalid_query`); a path id that is not UTF-8 (400, \
    `invalid_path`); a plain request to the event stream (400, `not_websocket`). The `/v1/` \
    routes answer in OpenAI's error shape instead (docs/OPENAI.md). The schemas list the values \
    each field takes; a value they allow may still be refused for what it means (an unknown \
    model, a `task_id` already live).\n\n\
    With several coordinators on one PostgreSQL store (docs/SCALING.md), a **standby** answers \
    `GET /cluster/health`, `/metrics` and the docs itself, and every other request with \
    `error_code` `not_leader`: **307 Temporary Redirect** to the same path on the leader \
    (`Location`; 307 keeps the method and body), the body naming the leader's URLs in `leader` \
    (HTTP) and `leader_ws` (WebSocket); or **503** with `Retry-After: 1` while no coordinator \
    leads (or naming only `leader_ws` when the leader serves no HTTP API). HTTP clients drop \
    `Authorization` on a redirect to another host or port: follow it with the key, or use \
    `leader` from `GET /cluster/health`.\n";

/// One route: its role, description, parameters, body and responses.
fn operation(out: &mut String, method: &str, path: &str, role: &str, op: &Value) {
    let _ = write!(out, "\n## `{method} {path}`\n\nRole: `{role}`.");
    if let Some(d) = op["description"].as_str().or(op["summary"].as_str()) {
        let _ = write!(out, " {}", d.replace('\n', " "));
    }
    out.push('\n');
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str("\n| parameter | in | required | type | meaning |\n|---|---|---|---|---|\n");
        for p in params {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                p["name"].as_str().unwrap_or("?"),
                p["in"].as_str().unwrap_or("?"),
                if p["required"].as_bool() == Some(true) { "yes" } else { "no" },
                type_name(&p["schema"]),
                p["description"].as_str().unwrap_or("").replace('\n', " "),
            );
        }
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (mime, c) in content {
            let _ = writeln!(out, "\nBody ({mime}): {}", type_name(&c["schema"]));
        }
    }
    if let Some(responses) = op["responses"].as_object() {
        out.push_str("\n| status | meaning | body |\n|---|---|---|\n");
        for (status, r) in responses {
            let body = r["content"]
                .as_object()
                .and_then(|c| c.values().next())
                .map_or_else(String::new, |c| type_name(&c["schema"]));
            let meaning = match r["description"].as_str().filter(|d| !d.is_empty()) {
                Some(d) => d.replace('\n', " "),
                None => reason(status).to_owned(),
            };
            let _ = writeln!(out, "| {status} | {meaning} | {body} |");
        }
    }
}

/// One schema: its fields, or a pointer for tagged unions.
fn schema_section(out: &mut String, name: &str, schema: &Value) {
    let _ = write!(out, "\n## `{name}`\n\n");
    if let Some(d) = schema["description"].as_str() {
        let _ = writeln!(out, "{}\n", d.replace('\n', " "));
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map_or_else(Vec::new, |r| r.iter().filter_map(Value::as_str).collect());
    let Some(props) = schema["properties"].as_object() else {
        out.push_str("One of several shapes, tagged by `event`; see `docs/openapi.json`.\n");
        return;
    };
    out.push_str("| field | type | required | meaning |\n|---|---|---|---|\n");
    for (field, p) in props {
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            type_name(p),
            if required.contains(&field.as_str()) { "yes" } else { "no" },
            p["description"].as_str().unwrap_or("").replace('\n', " "),
        );
    }
}

/// A schema as a short type name: `Health`, `string`, `array of TaskView`.
fn type_name(v: &Value) -> String {
    let reference = |r: &str| format!("`{}`", r.rsplit('/').next().unwrap_or(r));
    if let Some(r) = v["$ref"].as_str() {
        return reference(r);
    }
    match v["type"].as_str() {
        Some("array") => {
            let items = &v["items"];
            let item = match items["$ref"].as_str() {
                Some(r) => reference(r),
                None if items.is_null() => "any".to_owned(),
                None => items["type"].as_str().unwrap_or("object").to_owned(),
            };
            format!("array of {item}")
        }
        Some(t) => t.to_owned(),
        None => match v["type"].as_array() {
            Some(ts) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
            None => "any".to_owned(),
        },
    }
}

/// The usual meaning of an HTTP status in this API.
fn reason(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        "400" => "Bad request (a bad filter or value)",
        "401" => "Missing or invalid key",
        "403" => "The key's role is too weak",
        "404" => "Not found",
        "409" => "Conflict",
        "413" => "Body over the size limit",
        "422" => "The body or the task is not valid",
        "503" => "Busy, or shutting down",
        _ => "",
    }
}
