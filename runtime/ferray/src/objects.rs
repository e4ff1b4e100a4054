//! Object references: a name for a value that may not exist yet (a task's
//! pending result) or one already in the store (`put`). A reference holds
//! one count on its object in the store; the object is freed when the last
//! reference to it goes.

use std::fmt;
use std::sync::Arc;

use ferray_core::{Error, ObjectId, TaskId};
use ferray_store::ObjectStore;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// What a reference names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefName {
    /// The result of a task or an actor call.
    Task(TaskId),
    /// An object put by a driver or a guest.
    Put(ObjectId),
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefName::Task(t) => write!(f, "{t}"),
            RefName::Put(o) => write!(f, "obj-{}", o.short()),
        }
    }
}

#[derive(Clone)]
pub(crate) enum SlotState {
    Pending,
    /// In this node's store, with one count held by the reference.
    Ready(ObjectId),
    /// Ready on the cluster: the bytes are fetched from a holder when needed
    /// (the reference holds no count here).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Remote(ObjectId),
    Failed(Error),
}

struct Inner {
    name: RefName,
    state: Mutex<SlotState>,
    notify: Notify,
    store: Arc<ObjectStore>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let SlotState::Ready(id) = &*self.state.get_mut() {
            self.store.decref(id);
        }
    }
}

/// A reference to an object, as Ray's `ObjectRef`: returned at once by a
/// submission, resolved when the value is ready. Cheap to clone.
#[derive(Clone)]
pub struct ObjectRef(Arc<Inner>);

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({})", self.0.name)
    }
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ObjectRef {
    pub(crate) fn pending(name: TaskId, store: Arc<ObjectStore>) -> Self {
        Self(Arc::new(Inner {
            name: RefName::Task(name),
            state: Mutex::new(SlotState::Pending),
            notify: Notify::new(),
            store,
        }))
    }

    /// A reference to an object already in the store; takes over one count.
    pub(crate) fn ready(id: ObjectId, store: Arc<ObjectStore>) -> Self {
        Self(Arc::new(Inner {
            name: RefName::Put(id),
            state: Mutex::new(SlotState::Ready(id)),
            notify: Notify::new(),
            store,
        }))
    }

    pub fn name(&self) -> RefName {
        self.0.name
    }

    /// The content id once the value is ready.
    pub fn content_id(&self) -> Option<ObjectId> {
        match &*self.0.state.lock() {
            SlotState::Ready(id) | SlotState::Remote(id) => Some(*id),
            _ => None,
        }
    }

    /// A reference to an object that lives elsewhere in the cluster.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn remote(id: ObjectId, store: Arc<ObjectStore>) -> Self {
        Self(Arc::new(Inner {
            name: RefName::Put(id),
            state: Mutex::new(SlotState::Remote(id)),
            notify: Notify::new(),
            store,
        }))
    }

    /// Resolve with an object held elsewhere in the cluster (no count here).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn resolve_remote(&self, id: ObjectId) {
        {
            let mut s = self.0.state.lock();
            if !matches!(*s, SlotState::Pending) {
                return;
            }
            *s = SlotState::Remote(id);
        }
        self.0.notify.notify_waiters();
    }

    /// Wait until the value is ready, without fetching it: its content id,
    /// or the task's failure (`ray.wait` on one reference that also tells
    /// how it ended).
    pub async fn resolved(&self) -> Result<ObjectId, Error> {
        self.ready_id().await
    }

    pub fn is_ready(&self) -> bool {
        !matches!(&*self.0.state.lock(), SlotState::Pending)
    }

    pub(crate) fn state(&self) -> SlotState {
        self.0.state.lock().clone()
    }

    /// Resolve with an object already counted once for this reference.
    /// A second resolution is ignored (and its count given back).
    pub(crate) fn resolve(&self, id: ObjectId) {
        {
            let mut s = self.0.state.lock();
            if !matches!(*s, SlotState::Pending) {
                drop(s);
                self.0.store.decref(&id);
                return;
            }
            *s = SlotState::Ready(id);
        }
        self.0.notify.notify_waiters();
    }

    pub(crate) fn fail(&self, e: Error) {
        {
            let mut s = self.0.state.lock();
            if !matches!(*s, SlotState::Pending) {
                return;
            }
            *s = SlotState::Failed(e);
        }
        self.0.notify.notify_waiters();
    }

    /// Wait until resolved; the content id or the failure.
    pub(crate) async fn ready_id(&self) -> Result<ObjectId, Error> {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match &*self.0.state.lock() {
                SlotState::Ready(id) | SlotState::Remote(id) => return Ok(*id),
                SlotState::Failed(e) => return Err(e.clone()),
                SlotState::Pending => {}
            }
            notified.await;
        }
    }

    /// Wait until resolved, either way.
    pub(crate) async fn settled(&self) {
        let _ = self.ready_id().await;
    }
}
