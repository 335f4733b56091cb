//! Which namespace an account has: flat, or hierarchical (ADLS Gen2), from Get Account
//! Information's `x-ms-is-hns-enabled`, asked once per process per account and kept. No setting
//! says it: the account does.
//!
//! Backups differ by it: a hierarchical namespace takes no blob snapshots and no index tags, so
//! the backup engine pins its copies to the listed version instead (`engine::backup`).

use azure_storage_blob::models::{
    BlobContainerClientGetAccountInfoResultHeaders, BlobServiceClientGetAccountInfoResultHeaders,
};

use super::{StorageAccount, StorageError, StorageResultExt};

/// An account's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Blob Storage: blobs in containers, names with `/` in them; snapshots and index tags.
    Flat,
    /// ADLS Gen2: directories and files with owners, groups, permissions and ACLs; no blob
    /// snapshots (a preview closed to new customers) and no index tags.
    Hierarchical,
    /// This connection may not ask (Get Account Information refused at the account and in the
    /// container). Backups run as on a flat account — a hierarchical one refuses their
    /// snapshots and tags loudly (409), blob by blob, never silently — but what must know
    /// (a restore's target: are there directories and ACLs to write?) refuses to guess.
    Unknown,
}

impl Namespace {
    pub fn is_hierarchical(self) -> bool {
        self == Namespace::Hierarchical
    }

    fn from_header(hns: Option<bool>) -> Namespace {
        // An account (or emulator) that does not say has no hierarchical namespace: the header
        // exists since service version 2019-07-07, and every HNS account sends it.
        if hns == Some(true) {
            Namespace::Hierarchical
        } else {
            Namespace::Flat
        }
    }
}

impl StorageAccount {
    /// This account's namespace, asked once per process (Get Account Information) and kept.
    ///
    /// Asked at the account; where this connection may not ask there (a role assigned on a
    /// container, a SAS of a container), asked in `container`. Where it may ask nowhere, it is
    /// [`Namespace::Unknown`], said once in the log and kept. A failure that may pass (busy,
    /// unreachable) is returned and not kept.
    pub async fn namespace(&self, container: &str) -> Result<Namespace, StorageError> {
        self.namespace
            .get_or_try_init(|| self.detect_namespace(container))
            .await
            .copied()
    }

    async fn detect_namespace(&self, container: &str) -> Result<Namespace, StorageError> {
        let operation = || "reading the account's information (its namespace)".to_owned();
        let at_account = async {
            let info = self
                .blob_service()?
                .get_account_info(None)
                .await
                .during(operation)?;
            info.is_hierarchical_namespace_enabled().during(operation)
        }
        .await;
        let refused = match at_account {
            Ok(hns) => return Ok(Namespace::from_header(hns)),
            Err(e) if e.status == Some(403) => e,
            Err(e) => return Err(e),
        };
        let in_container = async {
            let info = self
                .container_client(container)?
                .get_account_info(None)
                .await
                .during(operation)?;
            info.is_hierarchical_namespace_enabled().during(operation)
        }
        .await;
        match in_container {
            Ok(hns) => Ok(Namespace::from_header(hns)),
            Err(e) if e.status == Some(403) => {
                tracing::warn!(
                    connection = self.connection.name,
                    error = %refused,
                    "this connection may not read the account's information, at the account or \
                     in container {container}: its namespace is unknown (backups use snapshots \
                     and index tags, which a hierarchical namespace refuses; a restore into it \
                     refuses to run)"
                );
                Ok(Namespace::Unknown)
            }
            Err(e) => Err(e),
        }
    }
}
