//! The publish context: what ControllerPublishVolume (the log-in, claim 13)
//! hands the node through the CO, and what the node needs to reach the
//! primary's storage system.

use std::collections::HashMap;

use tonic::Status;

/// Endpoint URL of the primary's storage system.
pub const CTX_STORAGE_ENDPOINT: &str = "storageEndpoint";
/// Real volume id on the storage systems (storage.proto `volume_id`).
pub const CTX_VOLUME_ID: &str = "volumeId";
/// Epoch the host logged in at; every I/O carries it.
pub const CTX_EPOCH: &str = "epoch";
/// Data center of the primary.
pub const CTX_DATA_CENTER: &str = "dataCenter";

/// A parsed publish context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishContext {
    pub storage_endpoint: String,
    pub volume_id: String,
    pub epoch: u64,
    pub data_center: String,
}

impl PublishContext {
    /// The map returned by ControllerPublishVolume.
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                CTX_STORAGE_ENDPOINT.to_owned(),
                self.storage_endpoint.clone(),
            ),
            (CTX_VOLUME_ID.to_owned(), self.volume_id.clone()),
            (CTX_EPOCH.to_owned(), self.epoch.to_string()),
            (CTX_DATA_CENTER.to_owned(), self.data_center.clone()),
        ])
    }

    /// Parses `publish_context`; a missing or malformed key is
    /// INVALID_ARGUMENT naming it.
    pub fn parse(map: &HashMap<String, String>) -> Result<Self, Status> {
        let get = |key: &str| -> Result<String, Status> {
            match map.get(key) {
                Some(v) if !v.is_empty() => Ok(v.clone()),
                _ => Err(Status::invalid_argument(format!(
                    "publish_context.{key} is required (set by ControllerPublishVolume)"
                ))),
            }
        };
        let storage_endpoint = get(CTX_STORAGE_ENDPOINT)?;
        if !(storage_endpoint.starts_with("http://") || storage_endpoint.starts_with("https://")) {
            return Err(Status::invalid_argument(format!(
                "publish_context.{CTX_STORAGE_ENDPOINT} {storage_endpoint:?} is not an http(s) URL"
            )));
        }
        let epoch = get(CTX_EPOCH)?;
        let epoch = epoch.parse::<u64>().map_err(|_| {
            Status::invalid_argument(format!(
                "publish_context.{CTX_EPOCH} {epoch:?} is not an unsigned integer"
            ))
        })?;
        Ok(Self {
            storage_endpoint,
            volume_id: get(CTX_VOLUME_ID)?,
            epoch,
            data_center: map.get(CTX_DATA_CENTER).cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_bad_keys() {
        let ctx = PublishContext {
            storage_endpoint: "http://127.0.0.1:7100".into(),
            volume_id: "ns.v".into(),
            epoch: 7,
            data_center: "dc-b".into(),
        };
        assert_eq!(PublishContext::parse(&ctx.to_map()).unwrap(), ctx);

        let mut map = ctx.to_map();
        map.insert(CTX_EPOCH.into(), "seven".into());
        let e = PublishContext::parse(&map).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("publish_context.epoch"));

        map.remove(CTX_VOLUME_ID);
        map.insert(CTX_EPOCH.into(), "1".into());
        assert!(
            PublishContext::parse(&map)
                .unwrap_err()
                .message()
                .contains("volumeId")
        );

        let mut map = ctx.to_map();
        map.insert(CTX_STORAGE_ENDPOINT.into(), "10.0.0.1:7100".into());
        assert!(
            PublishContext::parse(&map)
                .unwrap_err()
                .message()
                .contains("storageEndpoint")
        );
    }
}
