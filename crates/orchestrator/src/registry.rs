//! The set of stage kinds a pipeline may name.

use std::collections::BTreeMap;
use std::sync::Arc;

use stage_api::StageKind;

/// Stage kinds by name. The CLI builds it from every stage crate; tests build their own.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind; a second kind with the same name is a programming error.
    pub fn register(&mut self, kind: Arc<dyn StageKind>) -> &mut Self {
        let name = kind.name();
        let previous = self.kinds.insert(name, kind);
        assert!(previous.is_none(), "stage kind `{name}` registered twice");
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StageKind>> {
        self.kinds.values()
    }
}
