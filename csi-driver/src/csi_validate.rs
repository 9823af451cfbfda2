//! Early validation shared by the CSI controller and node services.
//!
//! The CSI specification asks a plugin to check every request before acting
//! and to answer a malformed one with INVALID_ARGUMENT ("the CO MUST fix the
//! request"). Every message here names the request field at fault, so a user
//! reading the CO's event knows what to change.

use roam_engine::frontend::FsType;
use roam_proto::csi::VolumeCapability;
use roam_proto::csi::volume_capability::access_mode::Mode;
use roam_proto::csi::volume_capability::{AccessType, MountVolume};
use tonic::Status;

/// How a volume is handed to the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A mounted filesystem.
    Mount {
        /// None when the request left it empty.
        fs_type: Option<FsType>,
        mount_flags: Vec<String>,
    },
    /// The raw block device.
    Block,
}

impl Access {
    pub fn is_block(&self) -> bool {
        matches!(self, Access::Block)
    }
}

/// INVALID_ARGUMENT "`field` is required" when `value` is empty.
pub fn require<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(value)
}

/// Access modes Roam serves: one node at a time (the primary follows that
/// node), read-write or read-only.
pub fn mode_supported(mode: Mode) -> bool {
    matches!(
        mode,
        Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter
    )
}

/// Checks one capability's shape (access type and mode present, file
/// system known). Returns the access and whether the mode is one Roam
/// serves; the caller picks the code for an unsupported mode, because the
/// specification gives different ones per RPC.
pub fn parse_capability(field: &str, cap: &VolumeCapability) -> Result<(Access, bool), Status> {
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| Status::invalid_argument(format!("{field}.access_mode is required")))?;
    let mode = Mode::try_from(mode.mode).map_err(|_| {
        Status::invalid_argument(format!("{field}.access_mode.mode {} is unknown", mode.mode))
    })?;
    if mode == Mode::Unknown {
        return Err(Status::invalid_argument(format!(
            "{field}.access_mode.mode is required"
        )));
    }
    let access = match &cap.access_type {
        None => {
            return Err(Status::invalid_argument(format!(
                "{field}.access_type is required (block or mount)"
            )));
        }
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(MountVolume {
            fs_type,
            mount_flags,
            ..
        })) => {
            let fs = if fs_type.is_empty() {
                None
            } else {
                Some(FsType::parse(fs_type).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{field}.mount.fs_type {fs_type:?} is not supported (ext4 or xfs)"
                    ))
                })?)
            };
            Access::Mount {
                fs_type: fs,
                mount_flags: mount_flags.clone(),
            }
        }
    };
    Ok((access, mode_supported(mode)))
}

/// One required capability whose mode must be supported; an unsupported
/// mode gets `unsupported_code` (FAILED_PRECONDITION for publish and stage,
/// "exceeds capabilities" in the specification).
pub fn required_capability(
    field: &str,
    cap: Option<&VolumeCapability>,
    unsupported_code: tonic::Code,
) -> Result<Access, Status> {
    let cap = cap.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))?;
    let (access, supported) = parse_capability(field, cap)?;
    if !supported {
        return Err(Status::new(
            unsupported_code,
            format!("{field}.access_mode: Roam volumes are published to one node at a time"),
        ));
    }
    Ok(access)
}

/// An absolute path argument.
pub fn absolute_path<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    require(field, value)?;
    if !value.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "{field} {value:?} must be an absolute path"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_proto::csi::volume_capability::{AccessMode, BlockVolume};

    fn cap(access: Option<AccessType>, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: access,
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    fn mount(fs: &str) -> Option<AccessType> {
        Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn missing_parts_are_invalid_and_named() {
        let e = required_capability("volume_capability", None, tonic::Code::FailedPrecondition)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("volume_capability is required"));
        let e = parse_capability("c", &cap(None, Mode::SingleNodeWriter)).unwrap_err();
        assert!(e.message().contains("c.access_type"));
        let e = parse_capability("c", &cap(mount(""), Mode::Unknown)).unwrap_err();
        assert!(e.message().contains("c.access_mode.mode"));
        let e = parse_capability("c", &cap(mount("btrfs"), Mode::SingleNodeWriter)).unwrap_err();
        assert!(e.message().contains("fs_type"));
    }

    #[test]
    fn single_node_modes_pass_and_multi_node_modes_get_the_callers_code() {
        let (a, ok) = parse_capability("c", &cap(mount("xfs"), Mode::SingleNodeWriter)).unwrap();
        assert!(ok);
        assert_eq!(
            a,
            Access::Mount {
                fs_type: Some(FsType::Xfs),
                mount_flags: vec![]
            }
        );
        let block = Some(AccessType::Block(BlockVolume {}));
        let (a, ok) = parse_capability("c", &cap(block, Mode::SingleNodeReaderOnly)).unwrap();
        assert!(ok && a.is_block());
        let c = cap(mount(""), Mode::MultiNodeMultiWriter);
        let e = required_capability("c", Some(&c), tonic::Code::FailedPrecondition).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn paths_must_be_absolute() {
        assert!(absolute_path("target_path", "/a/b").is_ok());
        assert_eq!(
            absolute_path("target_path", "a").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(
            absolute_path("target_path", "")
                .unwrap_err()
                .message()
                .contains("target_path")
        );
    }
}
