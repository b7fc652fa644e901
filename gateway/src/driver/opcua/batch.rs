//! Operation limits and batching. A server states how much one call may
//! carry (`Server/ServerCapabilities/OperationLimits`, and
//! `MaxMonitoredItemsPerSubscription`); calls are split accordingly, and a
//! call the server still refuses as too large (`BadTooManyOperations`,
//! `BadRequestTooLarge`, `BadEncodingLimitsExceeded`, and `BadDecodingError`
//! from servers whose decoder limits are below their stated operation
//! limits) is retried with half the batch, which is then kept.

use std::future::Future;

use opcua::client::Session;
use opcua::types::{
    AttributeId, Error, NodeId, QualifiedName, ReadValueId, StatusCode, TimestampsToReturn,
    VariableId, Variant,
};

/// What a server allows per call; `None` where it states no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerLimits {
    /// MaxMonitoredItemsPerCall.
    pub monitored_items_per_call: Option<usize>,
    /// MaxNodesPerRead.
    pub nodes_per_read: Option<usize>,
    /// MaxNodesPerBrowse.
    pub nodes_per_browse: Option<usize>,
    /// MaxNodesPerTranslateBrowsePathsToNodeIds.
    pub nodes_per_translate: Option<usize>,
    /// MaxMonitoredItemsPerSubscription.
    pub items_per_subscription: Option<usize>,
    /// MaxSubscriptionsPerSession.
    pub subscriptions_per_session: Option<usize>,
}

const LIMIT_NODES: [VariableId; 6] = [
    VariableId::Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
    VariableId::Server_ServerCapabilities_MaxMonitoredItemsPerSubscription,
    VariableId::Server_ServerCapabilities_MaxSubscriptionsPerSession,
];

/// A limit from a read value: a positive whole number; 0, absent, bad or
/// of another type means none stated.
fn limit_of(value: Option<&Variant>) -> Option<usize> {
    let n: u64 = match value? {
        Variant::UInt32(v) => u64::from(*v),
        Variant::UInt16(v) => u64::from(*v),
        Variant::Int32(v) => u64::try_from(*v).ok()?,
        Variant::UInt64(v) => *v,
        Variant::Int64(v) => u64::try_from(*v).ok()?,
        _ => return None,
    };
    usize::try_from(n).ok().filter(|n| *n > 0)
}

/// Reads the server's limits. Servers that do not expose them (or refuse
/// the read) get no limits; refusals are then learned by halving.
pub async fn read_limits(session: &Session) -> ServerLimits {
    let nodes: Vec<ReadValueId> = LIMIT_NODES
        .iter()
        .map(|id| ReadValueId {
            node_id: NodeId::from(*id),
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            data_encoding: QualifiedName::null(),
        })
        .collect();
    let Ok(values) = session.read(&nodes, TimestampsToReturn::Neither, 0.0).await else {
        return ServerLimits::default();
    };
    let get = |i: usize| {
        values
            .get(i)
            .filter(|v| v.status.is_none_or(|s| s.is_good()))
            .and_then(|v| limit_of(v.value.as_ref()))
    };
    ServerLimits {
        monitored_items_per_call: get(0),
        nodes_per_read: get(1),
        nodes_per_browse: get(2),
        nodes_per_translate: get(3),
        items_per_subscription: get(4),
        subscriptions_per_session: get(5),
    }
}

/// Whether a failed call may succeed with fewer operations.
pub fn is_too_large(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadTooManyOperations
            | StatusCode::BadRequestTooLarge
            | StatusCode::BadResponseTooLarge
            | StatusCode::BadEncodingLimitsExceeded
            | StatusCode::BadTcpMessageTooLarge
            // A server whose decoder refuses a large request (arrays or
            // messages over its limits) says so.
            | StatusCode::BadDecodingError
    )
}

/// The working size of one kind of call: starts at the server's limit (or
/// the configured maximum), halves on refusal, never grows back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    size: usize,
}

impl Batch {
    /// A batch of the server's `limit` capped at `max`.
    pub fn new(limit: Option<usize>, max: usize) -> Batch {
        Batch {
            size: limit.unwrap_or(max).min(max).max(1),
        }
    }

    /// The current size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Halves the size; `false` when it is already 1.
    pub fn halve(&mut self) -> bool {
        if self.size <= 1 {
            return false;
        }
        self.size /= 2;
        true
    }
}

/// Calls `call` on consecutive slices of `items` of at most the batch's
/// size (each as an owned `Vec`) and concatenates the results, adding the
/// calls made to `calls`; a refusal as too large halves the
/// batch and retries the same slice. Each call must answer one result per
/// item; a server that answers otherwise fails the call with
/// `BadUnexpectedError` (hostile or broken servers end as errors).
///
/// # Errors
/// The first call that fails for another reason (or with a batch of 1).
pub async fn in_batches<T, R, F, Fut>(
    items: &[T],
    batch: &mut Batch,
    calls: &mut u64,
    mut call: F,
) -> Result<Vec<R>, Error>
where
    T: Clone,
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, Error>>,
{
    let mut out = Vec::with_capacity(items.len());
    let mut at = 0;
    while at < items.len() {
        let end = (at + batch.size()).min(items.len());
        let slice = &items[at..end];
        *calls += 1;
        match call(slice.to_vec()).await {
            Ok(results) if results.len() == slice.len() => {
                out.extend(results);
                at = end;
            }
            Ok(results) => {
                return Err(Error::new(
                    StatusCode::BadUnexpectedError,
                    format!(
                        "the server answered {} results for {} operations",
                        results.len(),
                        slice.len()
                    ),
                ));
            }
            Err(e) if is_too_large(e.status()) && batch.halve() => {
                tracing::debug!(
                    status = %e.status(),
                    batch = batch.size(),
                    "server refused a call as too large; halving the batch"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[tokio::test]
    async fn refused_calls_are_halved_until_the_server_accepts_them() {
        let sizes = RefCell::new(Vec::new());
        let items: Vec<u32> = (0..10).collect();
        let mut batch = Batch::new(None, 8);
        let mut calls = 0;
        let out = in_batches(&items, &mut batch, &mut calls, |slice: Vec<u32>| {
            sizes.borrow_mut().push(slice.len());
            let refuse = slice.len() > 3;
            let answer: Vec<u32> = slice.iter().map(|x| x * 2).collect();
            async move {
                if refuse {
                    Err(Error::new(StatusCode::BadTooManyOperations, "too many"))
                } else {
                    Ok(answer)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(out, (0..10).map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(batch.size(), 2);
        assert_eq!(*sizes.borrow(), [8, 4, 2, 2, 2, 2, 2]);
        assert_eq!(calls, 7);
    }

    #[tokio::test]
    async fn other_failures_and_short_answers_are_errors() {
        let items = [1, 2, 3];
        let mut batch = Batch::new(Some(10), 5000);
        assert_eq!(batch.size(), 10);
        let err = in_batches(&items, &mut batch, &mut 0, |_s: Vec<i32>| async {
            Err::<Vec<i32>, _>(Error::new(StatusCode::BadNodeIdUnknown, "x"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BadNodeIdUnknown);
        let err = in_batches(&items, &mut batch, &mut 0, |_s: Vec<i32>| async {
            Ok(vec![1])
        })
        .await
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BadUnexpectedError);
        let mut one = Batch::new(Some(1), 10);
        let err = in_batches(&items, &mut one, &mut 0, |_s: Vec<i32>| async {
            Err::<Vec<i32>, _>(Error::new(StatusCode::BadRequestTooLarge, "x"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BadRequestTooLarge);
    }

    #[test]
    fn limits_are_positive_whole_numbers() {
        assert_eq!(limit_of(Some(&Variant::UInt32(1000))), Some(1000));
        assert_eq!(limit_of(Some(&Variant::UInt32(0))), None);
        assert_eq!(limit_of(Some(&Variant::Double(5.0))), None);
        assert_eq!(limit_of(Some(&Variant::Int32(-1))), None);
        assert_eq!(limit_of(None), None);
    }
}
