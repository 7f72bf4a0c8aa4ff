//! OpenAPI schemas for the fields whose accepted values a type does not
//! tell (strings from a closed list, a number-or-name): the lists come from
//! the code that reads them, so the document cannot drift from it.

use codes::WorkerStatus;
use sched::{Strategy, TaskState};
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};

/// A string that is one of `values`. (A field given its schema so loses its
/// doc comment: `description` stands in for it.)
fn one_of(values: impl IntoIterator<Item = &'static str>, description: &str) -> Schema {
    let b = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values));
    Schema::Object(b.description(Some(description)).build())
}

/// The same, or null (an optional field: null reads as absent).
fn one_of_or_null(values: impl IntoIterator<Item = &'static str>, description: &str) -> Schema {
    let values = values.into_iter().map(serde_json::Value::from).chain([serde_json::Value::Null]);
    let types = SchemaType::from_iter([Type::String, Type::Null]);
    let b = ObjectBuilder::new().schema_type(types).enum_values(Some(values));
    Schema::Object(b.description(Some(description)).build())
}

pub(super) fn task_state() -> Schema {
    let states = TaskState::ALL.iter().map(|s| s.as_str());
    one_of_or_null(states.chain([""]), "Only tasks in this state (empty: any).")
}

pub(super) fn worker_status() -> Schema {
    one_of_or_null(WorkerStatus::ALL.iter().map(|s| s.as_str()), "Only workers in this status.")
}

pub(super) fn strategy() -> Schema {
    one_of(Strategy::ALL.iter().map(|s| s.name()), "The strategy (any case, `-` or `_`).")
}

pub(super) fn bulk_action() -> Schema {
    one_of(["cancel", "retry"], "What to do with every task the filter matches.")
}

pub(super) fn token_kind() -> Schema {
    one_of_or_null(["worker", "client", "both"], "Which join token to rotate (default both).")
}

/// `proto::Priority`: an integer, or one of the seed's names.
pub(super) fn priority() -> Schema {
    let integer = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int32,
        )))
        .build();
    let name = one_of(["LOW", "NORMAL", "HIGH", "CRITICAL"], "A name, any case.");
    let null = ObjectBuilder::new().schema_type(Type::Null).build();
    let either = OneOfBuilder::new().item(integer).item(name).item(null);
    Schema::OneOf(either.description(Some("Higher runs first; NORMAL (1) by default.")).build())
}

/// An integer in `min..=max`.
fn integer(min: u32, max: Option<u32>, description: &str) -> Schema {
    let b = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(min)).maximum(max);
    Schema::Object(b.description(Some(description)).build())
}

fn boolean(description: &str) -> Schema {
    Schema::Object(
        ObjectBuilder::new().schema_type(Type::Boolean).description(Some(description)).build(),
    )
}

/// `proto::VerifyPolicy` (no other fields).
pub(super) fn verify() -> Schema {
    let max = proto::MAX_REPLICAS;
    let b = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("replicas", integer(1, Some(max), "Replicas on distinct workers."))
        .required("replicas")
        .property(
            "quorum",
            integer(
                1,
                Some(max),
                "Results that must agree, at most `replicas`; default `replicas`.",
            ),
        )
        .property("adaptive", boolean("Replicate trusted workers' results only now and then."))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let description = "Run on distinct workers and accept the result once `quorum` agree \
                       (docs/VERIFICATION.md); the cluster's default when absent.";
    Schema::Object(b.description(Some(description)).build())
}

/// `proto::Requirements`.
pub(super) fn requirements() -> Schema {
    let model = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A model the worker must serve."));
    let b = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("model", model)
        .property("gpu", boolean("The worker must have a GPU."))
        .property(
            "min_vram_mb",
            integer(0, None, "GPU memory the worker must have (implies `gpu`)."),
        );
    Schema::Object(b.description(Some("What a worker must have to run the task.")).build())
}

/// An OpenAI flag this API does not support: false, null or absent.
pub(super) fn unsupported_flag() -> Schema {
    let types = SchemaType::from_iter([Type::Boolean, Type::Null]);
    let b = ObjectBuilder::new().schema_type(types).enum_values(Some([Some(false), None]));
    Schema::Object(b.description(Some("Not supported: false or absent.")).build())
}

/// A chat message's content part: only text parts are read.
pub(super) fn text_part() -> Schema {
    one_of(["text"], "Only `text` parts are supported.")
}

/// `/v1/completions`' `prompt`: one string (a list is read only when it
/// holds one string; docs/OPENAI.md).
pub(super) fn prompt() -> Schema {
    let one = ObjectBuilder::new().schema_type(Type::String).build();
    let list = utoipa::openapi::schema::ArrayBuilder::new().items(one.clone());
    let list = list.min_items(Some(1)).max_items(Some(1)).build();
    let either = OneOfBuilder::new().item(one).item(list);
    Schema::OneOf(either.description(Some("One string, or a list holding one string.")).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed value is one the API reads back.
    #[test]
    fn the_lists_are_what_the_readers_accept() {
        let values = |s: Schema| match s {
            Schema::Object(o) => o.enum_values.unwrap_or_default(),
            _ => unreachable!(),
        };
        let values = |s: Schema| -> Vec<serde_json::Value> {
            values(s).into_iter().filter(|v| !v.is_null()).collect()
        };
        for v in values(task_state()).into_iter().filter(|v| v != "") {
            assert!(v.as_str().unwrap().parse::<TaskState>().is_ok(), "{v}");
        }
        for v in values(worker_status()) {
            assert!(v.as_str().unwrap().parse::<WorkerStatus>().is_ok(), "{v}");
        }
        for v in values(strategy()) {
            assert!(Strategy::parse(v.as_str().unwrap()).is_some(), "{v}");
        }
        assert_eq!(values(strategy()).len(), Strategy::ALL.len());
        let Schema::OneOf(p) = priority() else { panic!("priority is a oneOf") };
        let Some(utoipa::openapi::RefOr::T(name)) = p.items.get(1).cloned() else { panic!() };
        for v in values(name) {
            assert!(proto::Priority::parse(v.as_str().unwrap()).is_some(), "{v}");
        }
    }
}
