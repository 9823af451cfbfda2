//! Which changes of a watched object start a reconcile.
//!
//! The operator writes the status of every object it reconciles. Left as is,
//! each of those writes comes back through the watch and starts another
//! reconcile that only rereads what was just written; at a thousand volumes
//! that doubles or triples the reconciles and the API requests. The controllers
//! therefore react to what a status write cannot change: a change of
//! `metadata.generation` (the spec), of the annotations (the attached node
//! that ControllerPublish writes, the intent time), of the finalizers, the
//! start of a deletion, and the object's disappearance.
//!
//! Guarantees: every spec, annotation or finalizer change, every deletion, and
//! every object seen at (re)list reaches the controller. Caveats: a
//! status-only change by another writer does not; the reconciles' own
//! requeue timers pick those up (the status has one writer, the operator).

use std::{
    collections::{HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
};

use futures::{Stream, StreamExt};
use kube::{Resource, runtime::watcher};

/// What a status write cannot change: generation, annotations, finalizers
/// and whether a deletion started.
fn fingerprint<K: Resource>(obj: &K) -> u64 {
    let m = obj.meta();
    let mut h = DefaultHasher::new();
    m.generation.hash(&mut h);
    m.annotations.hash(&mut h);
    m.finalizers.hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// Key of an object across its versions (uid; name and namespace when absent).
fn key<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    match &m.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        ),
    }
}

/// Objects of a watch stream whose spec, annotations, finalizers or deletion
/// changed, and objects that were deleted. Put a reflector before it
/// (`.reflect(writer)`) so the cache still sees every version.
pub fn spec_changes<K, S>(events: S) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |ev| {
        let out = match ev {
            Err(e) => Some(Err(e)),
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let f = fingerprint(&o);
                (seen.insert(key(&o), f) != Some(f)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        };
        futures::future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn cm(generation: i64, status_marker: &str, annotation: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("x".into()),
                uid: Some("u1".into()),
                generation: Some(generation),
                annotations: annotation
                    .map(|a| BTreeMap::from([("roam.dev/attached-node".to_string(), a.into())])),
                ..Default::default()
            },
            // Stands in for a status change: data the fingerprint ignores.
            data: Some(BTreeMap::from([(
                "s".to_string(),
                status_marker.to_string(),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn status_only_changes_are_dropped_and_the_rest_pass() {
        let events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(cm(1, "a", None))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(cm(1, "b", None))),
            Ok(watcher::Event::Apply(cm(2, "b", None))),
            Ok(watcher::Event::Apply(cm(2, "c", Some("n1")))),
            Ok(watcher::Event::Apply(cm(2, "d", Some("n1")))),
            Ok(watcher::Event::Delete(cm(2, "d", Some("n1")))),
        ];
        let passed: Vec<_> = block_on(
            spec_changes::<ConfigMap, _>(futures::stream::iter(events))
                .map(|r| r.map(|o| o.data.unwrap_or_default()["s"].clone()))
                .collect::<Vec<_>>(),
        )
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
        let want: Vec<Result<String, String>> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| Ok(s.to_string()))
            .collect();
        assert_eq!(passed, want);
    }
}
