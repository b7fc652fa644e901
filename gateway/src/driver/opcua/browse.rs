//! Finding nodes: a device's root and tags by browse path
//! (TranslateBrowsePathsToNodeIds), the variables under a root (Browse with
//! continuation points, bounded in depth and count so a hostile server
//! cannot grow it without end), and their DataTypes (Read). Every call is
//! batched by the server's limits.

use std::collections::HashSet;

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowsePath, BrowseResultMask, ByteString,
    DataValue, Error, NodeClass, NodeClassMask, NodeId, ObjectId, QualifiedName, ReadValueId,
    ReferenceDescription, ReferenceTypeId, RelativePath, RelativePathElement, StatusCode,
    TimestampsToReturn, Variant,
};

use super::batch::{Batch, in_batches};
use super::config::Root;
use super::quality::kind_of_data_type;
use crate::device::ValueKind;

/// Most levels below a root that are browsed.
pub const MAX_DEPTH: usize = 6;
/// Most variables taken under one root.
pub const MAX_VARIABLES: usize = 20_000;
/// Most BrowseNext rounds for one node.
const MAX_BROWSE_NEXT: usize = 1000;

/// Batch sizes per service, from the server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Batches {
    /// Browse.
    pub browse: Batch,
    /// TranslateBrowsePathsToNodeIds.
    pub translate: Batch,
    /// Read.
    pub read: Batch,
}

/// A browse path as OPC UA's RelativePath along hierarchical references.
pub fn relative_path(path: &[(u16, String)]) -> RelativePath {
    RelativePath {
        elements: Some(
            path.iter()
                .map(|(ns, name)| RelativePathElement {
                    reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                    is_inverse: false,
                    include_subtypes: true,
                    target_name: QualifiedName::new(*ns, name.as_str()),
                })
                .collect(),
        ),
    }
}

/// Resolves browse paths from `base`; one result per path.
///
/// # Errors
/// When a call fails.
pub async fn translate(
    session: &Session,
    base: &NodeId,
    paths: &[Vec<(u16, String)>],
    batch: &mut Batch,
) -> Result<Vec<Result<NodeId, StatusCode>>, Error> {
    let requests: Vec<BrowsePath> = paths
        .iter()
        .map(|p| BrowsePath {
            starting_node: base.clone(),
            relative_path: relative_path(p),
        })
        .collect();
    let results = in_batches(&requests, batch, &mut 0, |slice| async move {
        session.translate_browse_paths_to_node_ids(&slice).await
    })
    .await?;
    Ok(results
        .into_iter()
        .map(|r| {
            if !r.status_code.is_good() {
                return Err(r.status_code);
            }
            r.targets
                .unwrap_or_default()
                .into_iter()
                .next()
                .map(|t| t.target_id.node_id)
                .ok_or(StatusCode::BadNoMatch)
        })
        .collect())
}

/// The NodeId of a device root.
///
/// # Errors
/// When the path does not resolve or the call fails.
pub async fn resolve_root(
    session: &Session,
    root: &Root,
    batch: &mut Batch,
) -> Result<NodeId, Error> {
    match root {
        Root::Objects => Ok(ObjectId::ObjectsFolder.into()),
        Root::Node(n) => Ok(n.clone()),
        Root::Path(p) => {
            let objects: NodeId = ObjectId::ObjectsFolder.into();
            let mut r = translate(session, &objects, std::slice::from_ref(p), batch).await?;
            match r.pop() {
                Some(Ok(node)) => Ok(node),
                Some(Err(status)) => {
                    Err(Error::new(status, "the root's browse path did not resolve"))
                }
                None => Err(Error::new(StatusCode::BadNoMatch, "no result")),
            }
        }
    }
}

/// A variable found under a root.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its browse names from the root, joined with `.` (`Temperature`,
    /// `Motor.Current`).
    pub name: String,
    /// Its browse path from the root, as config text (`2:Motor/2:Current`).
    pub path: String,
    /// Its NodeId.
    pub node: NodeId,
}

/// The hierarchical forward references of `nodes` (Objects and Variables),
/// following continuation points; one list per node.
///
/// # Errors
/// When a call fails.
pub async fn children(
    session: &Session,
    nodes: &[NodeId],
    batch: &mut Batch,
    include_properties: bool,
) -> Result<Vec<Vec<ReferenceDescription>>, Error> {
    let requests: Vec<BrowseDescription> = nodes
        .iter()
        .map(|n| BrowseDescription {
            node_id: n.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
            result_mask: BrowseResultMask::All as u32,
        })
        .collect();
    let results = in_batches(&requests, batch, &mut 0, |slice| async move {
        session.browse(&slice, 0, None).await
    })
    .await?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let mut refs = r.references.unwrap_or_default();
        let mut cp: ByteString = r.continuation_point;
        let mut rounds = 0;
        while !cp.is_null() && rounds < MAX_BROWSE_NEXT && refs.len() < MAX_VARIABLES {
            rounds += 1;
            let next = session
                .browse_next(false, std::slice::from_ref(&cp))
                .await?;
            let Some(n) = next.into_iter().next() else {
                break;
            };
            refs.extend(n.references.unwrap_or_default());
            cp = n.continuation_point;
        }
        if !cp.is_null() {
            let _ = session.browse_next(true, std::slice::from_ref(&cp)).await;
        }
        let has_property: NodeId = ReferenceTypeId::HasProperty.into();
        if !include_properties {
            refs.retain(|r| r.reference_type_id != has_property);
        }
        out.push(refs);
    }
    Ok(out)
}

fn path_segment(name: &QualifiedName) -> String {
    format!("{}:{}", name.namespace_index, name.name.as_ref())
}

/// Every variable under `root` (not its properties), breadth first, at most
/// [`MAX_DEPTH`] levels and [`MAX_VARIABLES`] variables.
///
/// # Errors
/// When a call fails.
pub async fn variables_under(
    session: &Session,
    root: &NodeId,
    batch: &mut Batch,
) -> Result<Vec<Found>, Error> {
    let mut found = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::from([root.clone()]);
    // (node, name prefix, path prefix)
    let mut level: Vec<(NodeId, String, String)> =
        vec![(root.clone(), String::new(), String::new())];
    for _ in 0..MAX_DEPTH {
        if level.is_empty() || found.len() >= MAX_VARIABLES {
            break;
        }
        let nodes: Vec<NodeId> = level.iter().map(|(n, _, _)| n.clone()).collect();
        let refs = children(session, &nodes, batch, false).await?;
        let mut next = Vec::new();
        for ((_, name, path), refs) in level.iter().zip(refs) {
            for r in refs {
                if r.node_id.server_index != 0 || !r.node_id.namespace_uri.is_null() {
                    continue; // on another server
                }
                let node = r.node_id.node_id;
                if !seen.insert(node.clone()) {
                    continue;
                }
                let browse = r.browse_name.name.as_ref();
                let child_name = if name.is_empty() {
                    browse.to_owned()
                } else {
                    format!("{name}.{browse}")
                };
                let child_path = if path.is_empty() {
                    path_segment(&r.browse_name)
                } else {
                    format!("{path}/{}", path_segment(&r.browse_name))
                };
                match r.node_class {
                    NodeClass::Variable if found.len() < MAX_VARIABLES => found.push(Found {
                        name: child_name,
                        path: child_path,
                        node,
                    }),
                    NodeClass::Object => next.push((node, child_name, child_path)),
                    _ => {}
                }
            }
        }
        level = next;
    }
    Ok(found)
}

fn read_id(node: &NodeId, attribute: AttributeId) -> ReadValueId {
    ReadValueId {
        node_id: node.clone(),
        attribute_id: attribute as u32,
        index_range: Default::default(),
        data_encoding: QualifiedName::null(),
    }
}

/// Reads one attribute of many nodes.
///
/// # Errors
/// When a call fails.
pub async fn read_attribute(
    session: &Session,
    nodes: &[NodeId],
    attribute: AttributeId,
    batch: &mut Batch,
) -> Result<Vec<DataValue>, Error> {
    let requests: Vec<ReadValueId> = nodes.iter().map(|n| read_id(n, attribute)).collect();
    in_batches(&requests, batch, &mut 0, |slice| async move {
        session.read(&slice, TimestampsToReturn::Neither, 0.0).await
    })
    .await
}

/// The value kind of each variable from its DataType and ValueRank; `None`
/// for what the gateway does not represent (or could not read).
///
/// # Errors
/// When a call fails.
pub async fn kinds(
    session: &Session,
    nodes: &[NodeId],
    batch: &mut Batch,
) -> Result<Vec<Option<ValueKind>>, Error> {
    let types = read_attribute(session, nodes, AttributeId::DataType, batch).await?;
    let ranks = read_attribute(session, nodes, AttributeId::ValueRank, batch).await?;
    Ok(types
        .into_iter()
        .zip(ranks)
        .map(|(t, r)| {
            let data_type = match t.value {
                Some(Variant::NodeId(id)) => *id,
                _ => return None,
            };
            let rank = match r.value {
                Some(Variant::Int32(rank)) => rank,
                _ => -1,
            };
            kind_of_data_type(&data_type, rank)
        })
        .collect())
}
