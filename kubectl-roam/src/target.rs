//! What a command is pointed at: a VirtualVolume by name, or the claim or pod
//! that uses one (`pvc/NAME`, `pod/NAME`), resolved through the claim's
//! PersistentVolume, whose CSI volume handle is `<namespace>/<name>` of the
//! VirtualVolume.

use std::str::FromStr;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::{Api, Client};
use roam_crds::DRIVER_NAME;

use crate::error::{Error, api};

/// A command's object, as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Volume(String),
    Claim(String),
    Pod(String),
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k.to_ascii_lowercase(), n),
            None => ("vv".to_string(), s),
        };
        if name.is_empty() || name.contains('/') {
            return Err(Error::BadTarget(s.into()));
        }
        let name = name.to_string();
        match kind.as_str() {
            "vv" | "virtualvolume" | "virtualvolumes" | "virtualvolume.roam.dev" => {
                Ok(Self::Volume(name))
            }
            "pvc" | "persistentvolumeclaim" | "persistentvolumeclaims" => Ok(Self::Claim(name)),
            "pod" | "pods" | "po" => Ok(Self::Pod(name)),
            _ => Err(Error::BadTarget(s.into())),
        }
    }
}

/// A VirtualVolume's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeRef {
    pub namespace: String,
    pub name: String,
}

/// The VirtualVolume a PersistentVolume carries, if it is a Roam one.
pub fn volume_of_pv(pv: &PersistentVolume) -> Option<VolumeRef> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    if csi.driver != DRIVER_NAME {
        return None;
    }
    let (namespace, name) = csi.volume_handle.split_once('/')?;
    Some(VolumeRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// The VirtualVolumes the target names (a pod may use several).
pub async fn resolve(client: &Client, ns: &str, target: &Target) -> Result<Vec<VolumeRef>, Error> {
    match target {
        Target::Volume(name) => Ok(vec![VolumeRef {
            namespace: ns.into(),
            name: name.clone(),
        }]),
        Target::Claim(claim) => Ok(vec![volume_of_claim(client, ns, claim).await?]),
        Target::Pod(pod) => {
            let p = Api::<Pod>::namespaced(client.clone(), ns)
                .get(pod)
                .await
                .map_err(api("get", "Pod", ns, pod))?;
            let claims: Vec<String> = p
                .spec
                .and_then(|s| s.volumes)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
                .collect();
            let mut out = Vec::new();
            let mut why = Vec::new();
            for c in &claims {
                match volume_of_claim(client, ns, c).await {
                    Ok(v) => out.push(v),
                    Err(Error::NotRoam { why: w, .. }) => why.push(w),
                    Err(e) => return Err(e),
                }
            }
            if out.is_empty() {
                return Err(Error::NotRoam {
                    what: format!("pod {ns}/{pod}"),
                    why: if claims.is_empty() {
                        "it mounts no PersistentVolumeClaim".into()
                    } else {
                        why.join("; ")
                    },
                });
            }
            Ok(out)
        }
    }
}

async fn volume_of_claim(client: &Client, ns: &str, claim: &str) -> Result<VolumeRef, Error> {
    let c = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(claim)
        .await
        .map_err(api("get", "PersistentVolumeClaim", ns, claim))?;
    let what = format!("claim {ns}/{claim}");
    let Some(pv_name) = c.spec.and_then(|s| s.volume_name).filter(|v| !v.is_empty()) else {
        return Err(Error::NotRoam {
            what,
            why: "it is not bound to a PersistentVolume yet".into(),
        });
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .map_err(api("get", "PersistentVolume", "", &pv_name))?;
    volume_of_pv(&pv).ok_or_else(|| Error::NotRoam {
        what,
        why: format!("its PersistentVolume {pv_name} is not of driver {DRIVER_NAME}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_style_names() {
        assert_eq!("db".parse::<Target>().unwrap(), Target::Volume("db".into()));
        assert_eq!(
            "vv/db".parse::<Target>().unwrap(),
            Target::Volume("db".into())
        );
        assert_eq!(
            "pvc/data".parse::<Target>().unwrap(),
            Target::Claim("data".into())
        );
        assert_eq!(
            "Pod/web-0".parse::<Target>().unwrap(),
            Target::Pod("web-0".into())
        );
        assert!("deploy/web".parse::<Target>().is_err());
        assert!("pvc/".parse::<Target>().is_err());
        assert!("pvc/a/b".parse::<Target>().is_err());
    }
}
