//! A JSONPatch (RFC 6902) from one JSON document to another.
//!
//! Objects are compared member by member. Arrays are walked in order, and an element of the new
//! array is matched to the next old one when they are equal or have the same `name` (containers,
//! volumes, env): then only what changed inside it is patched, and a new element is an `add` at
//! its index. So the patch touches only what the injector changed, and fields the injector's
//! types do not know (a newer API server's) are left alone in the stored object.

use serde::Serialize;
use serde_json::Value;

/// One operation; `value` is absent for `remove`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    pub op: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The operations that turn `old` into `new`, in the order they must be applied.
pub fn diff(old: &Value, new: &Value) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    diff_at(String::new(), old, new, &mut ops);
    ops
}

fn diff_at(path: String, old: &Value, new: &Value, ops: &mut Vec<PatchOp>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for key in o.keys().filter(|k| !n.contains_key(*k)) {
                ops.push(PatchOp { op: "remove", path: child(&path, key), value: None });
            }
            for (key, nv) in n {
                match o.get(key) {
                    Some(ov) => diff_at(child(&path, key), ov, nv, ops),
                    None => ops.push(PatchOp { op: "add", path: child(&path, key), value: Some(nv.clone()) }),
                }
            }
        }
        (Value::Array(o), Value::Array(n)) => diff_array(&path, o, n, ops),
        _ => ops.push(PatchOp { op: "replace", path, value: Some(new.clone()) }),
    }
}

/// After step `i`, the array reads `n[..i]` followed by the old elements not yet matched, which
/// is what makes each index right when the operations are applied one after another.
fn diff_array(path: &str, o: &[Value], n: &[Value], ops: &mut Vec<PatchOp>) {
    let mut j = 0;
    for (i, nv) in n.iter().enumerate() {
        let here = format!("{path}/{i}");
        match o.get(j) {
            Some(ov) if ov == nv || same_name(ov, nv) => {
                diff_at(here, ov, nv, ops);
                j += 1;
            }
            _ => ops.push(PatchOp { op: "add", path: here, value: Some(nv.clone()) }),
        }
    }
    for _ in j..o.len() {
        ops.push(PatchOp { op: "remove", path: format!("{path}/{}", n.len()), value: None });
    }
}

fn same_name(a: &Value, b: &Value) -> bool {
    matches!((a.get("name"), b.get("name")), (Some(x), Some(y)) if x == y)
}

/// A JSON Pointer step: `~` and `/` escaped (annotation keys contain `/`).
fn child(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Applies operations produced by [`diff`] (`add`, `remove`, `replace`) to `doc`.
///
/// `kube-inject` patches the workload's own JSON this way rather than re-serializing the
/// injected pod, so fields the injector's types do not know stay in its output.
pub fn apply(doc: &mut Value, ops: &[PatchOp]) -> Result<(), String> {
    for op in ops {
        let (parent, last) = op.path.rsplit_once('/').ok_or_else(|| format!("{}: not a JSON pointer", op.path))?;
        if parent.is_empty() && last.is_empty() {
            *doc = op.value.clone().unwrap_or(Value::Null);
            continue;
        }
        let key = last.replace("~1", "/").replace("~0", "~");
        let target = doc.pointer_mut(parent).ok_or_else(|| format!("{}: no such location", op.path))?;
        let bad = || format!("{}: cannot {} here", op.path, op.op);
        match (target, op.op) {
            (Value::Object(m), "remove") => m.remove(&key).map(drop).ok_or_else(bad)?,
            (Value::Object(m), _) => drop(m.insert(key, op.value.clone().unwrap_or(Value::Null))),
            (Value::Array(a), op_name) => {
                let i: usize = key.parse().map_err(|_| bad())?;
                match op_name {
                    "add" if i <= a.len() => a.insert(i, op.value.clone().unwrap_or(Value::Null)),
                    "remove" if i < a.len() => drop(a.remove(i)),
                    "replace" if i < a.len() => a[i] = op.value.clone().unwrap_or(Value::Null),
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(doc: &Value, ops: &[PatchOp]) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
        let mut doc = doc.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        doc
    }

    #[test]
    fn equal_documents_need_no_patch() {
        let d = json!({"a": [1, {"name": "x"}], "b": {"c": null}});
        assert!(diff(&d, &d).is_empty());
    }

    #[test]
    fn keys_with_slashes_are_escaped() {
        let old = json!({"metadata": {"annotations": {"a": "1"}}});
        let new = json!({"metadata": {"annotations": {"a": "1", "sidecar.istio.io/status": "{}", "x~y": "2"}}});
        let ops = diff(&old, &new);
        assert_eq!(ops[0].path, "/metadata/annotations/sidecar.istio.io~1status");
        assert_eq!(ops[1].path, "/metadata/annotations/x~0y");
        assert_eq!(apply(&old, &ops), new);
    }

    #[test]
    fn inserted_elements_are_adds_and_named_elements_are_patched_inside() {
        let old = json!({"containers": [{"name": "web", "image": "a", "extra": 1}, {"name": "db"}]});
        let new =
            json!({"containers": [{"name": "istio-proxy"}, {"name": "web", "image": "b", "extra": 1}, {"name": "db"}]});
        let ops = diff(&old, &new);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!((ops[0].op, ops[0].path.as_str()), ("add", "/containers/0"));
        assert_eq!((ops[1].op, ops[1].path.as_str()), ("replace", "/containers/1/image"));
        assert_eq!(apply(&old, &ops), new);
    }

    #[test]
    fn removals_and_type_changes_apply_cleanly() {
        let cases = [
            (json!({"a": [1, 2, 3], "b": 1}), json!({"a": [1], "c": {"d": []}})),
            (json!({"a": [1, 2]}), json!({"a": [3, 1, 4, 2, 5]})),
            (json!({"a": {"b": 1}}), json!({"a": [1]})),
            (json!({"a": [{"name": "x", "v": 1}]}), json!({"a": [{"name": "y"}, {"name": "x", "v": 2}]})),
        ];
        for (old, new) in cases {
            let ops = diff(&old, &new);
            assert_eq!(apply(&old, &ops), new, "{old} -> {new}: {ops:?}");
            let mut ours = old.clone();
            super::apply(&mut ours, &ops).unwrap();
            assert_eq!(ours, new, "our apply agrees with json-patch's");
        }
    }
}
