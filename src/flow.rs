//! Flows: a parent job that runs only after all its children finished, with
//! their results (BullMQ's `FlowProducer`). Children may be on other queues
//! of the same prefix and Redis.
//!
//! [`Flow::send`] creates the parent's record and every child in one script
//! call (`flow_add`). The parent waits outside the streams, in its record
//! (`QueueKeys::flow`); each child's envelope names its parent, and the
//! worker finishes a child and settles its parent in one script call
//! (`flow_child`), so no crash leaves a parent waiting for a child that is
//! done. The last child to finish puts the parent into its stream, where
//! any worker of the parent's queue runs it as an ordinary job.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::job_id::JobId;
use crate::priority::Priority;
use crate::producer::{EnqueueOptions, encode_flow_job};
use crate::protocol::envelope::ParentRef;
use crate::protocol::reply;
use crate::protocol::scripts::{COMMON_KEYS, scripts};
use crate::queue::Queue;
use crate::time::{millis, now_ms};

/// The most children one flow may have (one script call creates them all).
pub const MAX_FLOW_CHILDREN: usize = 1000;

/// How long a flow's record (and its children's results) lives after its
/// parent was released or failed, unless [`Flow::retention`] says otherwise:
/// 24 hours.
pub const DEFAULT_FLOW_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What a child's failure (dead-lettered after its attempts, or
/// permanently failed, cancelled or poison) does to its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnChildFailure {
    /// The parent goes to its queue's dead letters, with the error
    /// `child <id> failed: <error>`, and never runs. The default: a parent
    /// that needs its children's results should not run without them (BullMQ
    /// makes this opt-in, as `failParentOnFailure`; here it is opt-out).
    #[default]
    FailParent,
    /// The failed child counts as done; the parent runs when the others are
    /// done, and sees the child's error ([`ChildOutcome::Failed`]).
    Ignore,
}

/// A parent job and its children, checked and encoded, waiting to be sent
/// with [`Flow::send`].
///
/// # Example
///
/// ```no_run
/// use streamq::{EnqueueOptions, Flow, Queue, RedisConfig};
///
/// # async fn example() -> Result<(), streamq::Error> {
/// let redis = RedisConfig::from_env()?;
/// let reports = Queue::builder("reports").connect(&redis).await?;
/// let fetches = Queue::builder("fetches").connect(&redis).await?;
/// let mut flow = Flow::new(&reports, &"weekly report", &EnqueueOptions::new())?;
/// for host in ["db-1", "db-2"] {
///     flow.child(&fetches, &host, &EnqueueOptions::new())?;
/// }
/// let ids = flow.send().await?;
/// println!("parent {} waits for {} children", ids.parent, ids.children.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Flow {
    queue: Queue,
    parent_id: JobId,
    priority: Priority,
    name: String,
    envelope: Vec<u8>,
    retention: Duration,
    children: Vec<Child>,
}

#[derive(Debug)]
struct Child {
    queue: Queue,
    id: JobId,
    priority: Priority,
    name: String,
    envelope: Vec<u8>,
}

/// The ids of a flow that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowIds {
    /// The parent's job id: also the flow's id ([`Queue::flow`]).
    pub parent: JobId,
    /// The children's job ids, in the order they were added.
    pub children: Vec<JobId>,
}

/// Where a flow's parent is ([`Queue::flow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowState {
    /// Waiting for children: not in any stream yet.
    Waiting,
    /// Every child finished; the parent was put into its stream (it may
    /// have run since).
    Released,
    /// A child failed with [`OnChildFailure::FailParent`]; the parent is in
    /// its queue's dead letters and did not run.
    Failed,
}

/// A flow as its record says ([`Queue::flow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowInfo {
    /// Where the parent is.
    pub state: FlowState,
    /// How many children the flow has.
    pub children: u64,
    /// How many of them have not finished yet.
    pub pending: u64,
}

/// How one child of a flow ended, as its parent sees it
/// ([`Queue::children_results`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutcome<R> {
    /// It completed; its handler's result, `None` when it returned `()`
    /// or a result over the child queue's size limit.
    Completed(Option<R>),
    /// It was dead-lettered with this error (under [`OnChildFailure::Ignore`],
    /// or the child that failed the parent).
    Failed(String),
}

impl Flow {
    /// A flow whose parent is `payload` on `queue`, to run when every child
    /// added with [`Flow::child`] has finished.
    ///
    /// # Errors
    ///
    /// As [`crate::Batch::push`], and [`Error::InvalidFlow`] when `options`
    /// has a delay, a run time or an idempotency key (a parent runs when
    /// its children let it).
    pub fn new<T: Serialize + ?Sized>(
        queue: &Queue,
        payload: &T,
        options: &EnqueueOptions,
    ) -> Result<Flow, Error> {
        let parent = encode_flow_job(queue, payload, options, None)?;
        Ok(Flow {
            queue: queue.clone(),
            parent_id: parent.id,
            priority: parent.priority,
            name: parent.name,
            envelope: parent.envelope,
            retention: DEFAULT_FLOW_RETENTION,
            children: Vec::new(),
        })
    }

    /// How long the flow's record, with the children's results, lives once
    /// the parent was released or failed. Default:
    /// [`DEFAULT_FLOW_RETENTION`], 24 hours. A parent that waits in its
    /// stream longer than this runs without its children's results.
    pub fn retention(mut self, retention: Duration) -> Flow {
        self.retention = retention;
        self
    }

    /// The parent's job id, known before the flow is sent.
    pub fn parent_id(&self) -> &JobId {
        &self.parent_id
    }

    /// Adds a child on `queue` (the parent's or another of the same prefix
    /// and Redis) whose failure fails the parent
    /// ([`OnChildFailure::FailParent`]); returns its id.
    ///
    /// # Errors
    ///
    /// As [`Flow::child_with`].
    pub fn child<T: Serialize + ?Sized>(
        &mut self,
        queue: &Queue,
        payload: &T,
        options: &EnqueueOptions,
    ) -> Result<JobId, Error> {
        self.child_with(queue, payload, options, OnChildFailure::FailParent)
    }

    /// Adds a child with its own failure policy; returns its id.
    ///
    /// # Errors
    ///
    /// As [`crate::Batch::push`]; [`Error::InvalidFlow`] when `queue` has
    /// another key prefix than the parent's, when `options` has a delay, a
    /// run time or an idempotency key, or when the flow already has
    /// [`MAX_FLOW_CHILDREN`]. The flow is unchanged.
    pub fn child_with<T: Serialize + ?Sized>(
        &mut self,
        queue: &Queue,
        payload: &T,
        options: &EnqueueOptions,
        on_failure: OnChildFailure,
    ) -> Result<JobId, Error> {
        if self.children.len() >= MAX_FLOW_CHILDREN {
            return Err(Error::InvalidFlow(format!(
                "a flow has at most {MAX_FLOW_CHILDREN} children"
            )));
        }
        if queue.keys().sibling(self.queue.name())? != *self.queue.keys() {
            return Err(Error::InvalidFlow(format!(
                "child queue {:?} has another key prefix than the parent's queue {:?}",
                queue.name(),
                self.queue.name()
            )));
        }
        let parent = ParentRef {
            queue: self.queue.name().to_owned(),
            id: self.parent_id.to_string(),
            priority: self.priority.lua_index(),
            fail_parent: on_failure == OnChildFailure::FailParent,
        };
        let child = encode_flow_job(queue, payload, options, Some(&parent))?;
        self.children.push(Child {
            queue: queue.clone(),
            id: child.id.clone(),
            priority: child.priority,
            name: child.name,
            envelope: child.envelope,
        });
        Ok(child.id)
    }

    /// Creates the flow in one atomic script call: the parent's record and
    /// every child in its stream, or nothing. The parent runs once, after
    /// the last child finished.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFlow`] for a flow without children (nothing to wait
    /// for: enqueue the parent alone instead) and on Redis Cluster for
    /// queues in different hash slots; [`Error::QueueFull`] when a child
    /// queue's [`max_backlog`](crate::QueueBuilder::max_backlog) would be
    /// passed (nothing is created); [`Error::OutOfMemory`] and connection
    /// errors. On a timeout or dropped connection the flow may or may not
    /// have been created.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a dropped call may or may not have created the flow.
    pub async fn send(self) -> Result<FlowIds, Error> {
        if self.children.is_empty() {
            return Err(Error::InvalidFlow(
                "a flow needs at least one child; enqueue the parent alone instead".to_owned(),
            ));
        }
        self.queue.ensure_groups_once().await?;
        for child in &self.children {
            child.queue.ensure_groups_once().await?;
        }
        let keys = self.queue.keys();
        let mut extra = vec![keys.flow(self.parent_id.as_str())];
        // Each child queue once, as seven keys in a row; its position in
        // `queues` is its number in the call (from 1).
        let mut queues: Vec<(&Queue, usize, u64)> = Vec::new();
        let mut numbers = Vec::with_capacity(self.children.len());
        for child in &self.children {
            let known = queues
                .iter()
                .position(|(q, ..)| q.keys() == child.queue.keys());
            let number = match known {
                Some(at) => at,
                None => {
                    let child_keys = child.queue.keys();
                    queues.push((&child.queue, COMMON_KEYS + extra.len() + 1, 0));
                    extra.push(child_keys.stats().to_owned());
                    extra.extend(child_keys.streams().iter().cloned());
                    extra.push(child_keys.delayed().to_owned());
                    extra.push(child_keys.events());
                    queues.len() - 1
                }
            };
            queues[number].2 += 1;
            numbers.push(number + 1);
        }
        // Tracked children are recorded in their queue's `live` hash,
        // passed once per queue.
        let live: Vec<usize> = self
            .children
            .iter()
            .map(|child| match child.queue.settings().tracking {
                Some(_) => {
                    let key = child.queue.keys().live();
                    match extra.iter().position(|k| *k == key) {
                        Some(at) => COMMON_KEYS + at + 1,
                        None => {
                            extra.push(key);
                            COMMON_KEYS + extra.len()
                        }
                    }
                }
                None => 0,
            })
            .collect();
        let mut call = scripts().flow_add.call(keys, &extra);
        call.arg(now_ms())
            .arg(self.priority.lua_index())
            .arg(self.parent_id.as_str())
            .arg(&self.name)
            .arg(self.envelope.as_slice())
            .arg(millis(self.retention).max(1))
            .arg(queues.len());
        for (queue, first_key, adding) in &queues {
            let settings = queue.settings();
            call.arg(*first_key)
                .arg(settings.max_backlog.unwrap_or(0))
                .arg(settings.events_cap())
                .arg(u8::from(settings.tracking.is_some()))
                .arg(u8::from(settings.metrics))
                .arg(*adding);
        }
        for ((child, number), live) in self.children.iter().zip(numbers).zip(live) {
            call.arg(number)
                .arg(child.priority.lua_index())
                .arg(child.id.as_str())
                .arg(&child.name)
                .arg(live)
                .arg(child.envelope.as_slice());
        }
        let reply =
            call.invoke(&mut self.queue.conn())
                .await
                .map_err(|err| match reply::is_cross_slot(&err) {
                    true => Error::InvalidFlow(
                        "on Redis Cluster every queue of a flow must be in one hash slot"
                            .to_owned(),
                    ),
                    false => Error::from(err),
                })?;
        reply::done(&scripts().flow_add, reply)?;
        Ok(FlowIds {
            parent: self.parent_id,
            children: self.children.into_iter().map(|c| c.id).collect(),
        })
    }
}

impl Queue {
    /// The flow whose parent is `parent` on this queue: where the parent is
    /// and how many children it still waits for; `None` when there is no
    /// such flow (or its record expired after [`Flow::retention`]).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a record streamq did not write; connection and
    /// permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn flow(&self, parent: &JobId) -> Result<Option<FlowInfo>, Error> {
        let (state, total, pending): (Option<String>, Option<u64>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(self.keys().flow(parent.as_str()))
                .arg("state")
                .arg("total")
                .arg("pending")
                .query_async(&mut self.conn())
                .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let state = match state.as_str() {
            "waiting" => FlowState::Waiting,
            "released" => FlowState::Released,
            "failed" => FlowState::Failed,
            other => {
                return Err(Error::Decode(format!(
                    "flow {parent}: unknown state {other:?}"
                )));
            }
        };
        Ok(Some(FlowInfo {
            state,
            children: total.unwrap_or(0),
            pending: pending.unwrap_or(0).max(0).unsigned_abs(),
        }))
    }

    /// How each finished child of the flow whose parent is `parent` (on this
    /// queue) ended, by child id: what a parent's handler reads to combine
    /// its children's results. Children not finished yet are absent.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when a result does not decode as `R`; connection
    /// and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn children_results<R: DeserializeOwned>(
        &self,
        parent: &JobId,
    ) -> Result<BTreeMap<JobId, ChildOutcome<R>>, Error> {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.keys().flow(parent.as_str()))
            .query_async(&mut self.conn())
            .await?;
        let mut outcomes = BTreeMap::new();
        for (field, value) in fields {
            let Some(child) = field.strip_prefix(b"c:") else {
                continue;
            };
            let child = JobId::from(String::from_utf8_lossy(child).into_owned());
            let outcome = match value.split_first() {
                Some((b'r', [])) => ChildOutcome::Completed(None),
                Some((b'r', bytes)) => {
                    let result = rmp_serde::from_slice(bytes).map_err(|e| {
                        Error::Decode(format!("result of child {child} of flow {parent}: {e}"))
                    })?;
                    ChildOutcome::Completed(Some(result))
                }
                Some((b'e', error)) => {
                    ChildOutcome::Failed(String::from_utf8_lossy(error).into_owned())
                }
                _ => {
                    return Err(Error::Decode(format!(
                        "child {child} of flow {parent}: unknown record"
                    )));
                }
            };
            outcomes.insert(child, outcome);
        }
        Ok(outcomes)
    }
}
