//! CEL conditions of namespace rules, evaluated with the `cel` crate and Kubernetes' CEL library
//! (`kube-cel`): the same functions CRD validation rules have.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value as CelValue};
use serde_json::Value;

/// At most this many distinct expressions are memoised; past it the memo starts over.
const MEMO_LIMIT: usize = 1024;

type Memo = RwLock<HashMap<String, Arc<Program>>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// The compiled expression (memoised), or why it does not compile.
pub fn compile(expression: &str) -> Result<Arc<Program>, String> {
    if let Ok(map) = memo().read()
        && let Some(found) = map.get(expression)
    {
        return Ok(found.clone());
    }
    let program = Arc::new(
        Program::compile(expression).map_err(|e| format!("invalid CEL expression `{expression}`: {e}"))?,
    );
    if let Ok(mut map) = memo().write() {
        if map.len() >= MEMO_LIMIT {
            map.clear();
        }
        map.insert(expression.to_owned(), program.clone());
    }
    Ok(program)
}

/// Evaluates a Boolean expression over `object` and `request`. `Err` when it does not compile, fails,
/// or is not Boolean.
pub fn evaluate(expression: &str, object: &Value, request: &Value) -> Result<bool, String> {
    let program = compile(expression)?;
    // The functions are registered once per thread, not per evaluation (most of its cost).
    BASE.with(|base| {
        let mut context = base.new_inner_scope();
        // Giving CEL a variable converts the whole value: only those the expression names.
        let references = program.references();
        for (name, value) in [("object", object), ("request", request)] {
            if references.has_variable(name) {
                context
                    .add_variable(name, value)
                    .map_err(|e| format!("`{name}` cannot be given to CEL: {e}"))?;
            }
        }
        match program.execute(&context) {
            Ok(CelValue::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("`{expression}` is not Boolean: it gave {other:?}")),
            Err(e) => Err(format!("`{expression}` failed: {e}")),
        }
    })
}

thread_local! {
    /// The CEL library (the language's functions and Kubernetes'), per thread.
    static BASE: Context<'static> = Context::default().with_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_see_the_object_and_the_request_with_kubernetes_functions() {
        let object =
            json!({"metadata": {"labels": {"tier": "gold"}}, "spec": {"nodeSelector": {"os": "linux"}}});
        let request = json!({"operation": "CREATE", "userInfo": {"username": "alice", "groups": ["devs"]}});
        let yes = [
            "object.metadata.labels.tier == 'gold'",
            "!has(object.spec.schedulerName)",
            "'os' in object.spec.nodeSelector",
            "request.userInfo.groups.exists(g, g == 'devs')",
            "request.operation.lowerAscii() == 'create'",
        ];
        for e in yes {
            assert_eq!(evaluate(e, &object, &request), Ok(true), "{e}");
        }
        assert_eq!(
            evaluate("request.operation == 'UPDATE'", &object, &request),
            Ok(false)
        );
        assert!(
            evaluate("object.metadata.name", &object, &request)
                .unwrap_err()
                .contains("failed")
        );
        assert!(
            evaluate("1 + 1", &object, &request)
                .unwrap_err()
                .contains("not Boolean")
        );
        assert!(
            compile("object.(")
                .unwrap_err()
                .contains("invalid CEL expression")
        );
    }
}
