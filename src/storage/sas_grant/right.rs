//! The rights lakebackup needs of an account, each as the service authorizes it: what it lets
//! lakebackup do, its service, and what an account SAS or a service SAS must sign to grant it.

/// One thing lakebackup does with an account, as the service authorizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// Create Container (`{c}bak`, the jobs' ledger): each process creates what it writes into.
    CreateContainers,
    /// List Blobs.
    ListBlobs,
    /// Get Blob, Get Blob Properties.
    ReadBlobs,
    /// Put Blob over an existing blob, Set Blob Metadata (stamps, the ledger).
    WriteBlobs,
    /// Snapshot Blob.
    Snapshot,
    /// Lease Blob (`BACKUP_USE_LEASE` with the ADF engine).
    Lease,
    /// Delete Blob (or one of its snapshots).
    DeleteBlobs,
    /// Get Blob Tags, and tags in a listing.
    ReadTags,
    /// Set Blob Tags, and `x-ms-tags` on a write.
    WriteTags,
    /// Create Queue: each process creates the queues it sends to.
    CreateQueues,
    /// Put Message.
    SendMessages,
    /// Get Messages.
    ReceiveMessages,
    /// Delete Message.
    DeleteMessages,
    /// Update Message (a message's visibility renewed while it is worked on).
    UpdateMessages,
    /// Get User Delegation Key: an identity signs the SAS a server-side copy reads through.
    DelegationKey,
}

/// Which service a right is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Blob,
    Queue,
}

impl Right {
    /// What the right lets lakebackup do, as a verb phrase ("take snapshots").
    pub fn describe(self) -> &'static str {
        match self {
            Right::CreateContainers => "create containers",
            Right::ListBlobs => "list blobs",
            Right::ReadBlobs => "read blobs",
            Right::WriteBlobs => "write blobs and their metadata",
            Right::Snapshot => "take snapshots",
            Right::Lease => "lease blobs",
            Right::DeleteBlobs => "delete blobs",
            Right::ReadTags => "read blob index tags",
            Right::WriteTags => "write blob index tags",
            Right::CreateQueues => "create queues",
            Right::SendMessages => "send messages",
            Right::ReceiveMessages => "receive messages",
            Right::DeleteMessages => "delete messages",
            Right::UpdateMessages => "update messages",
            Right::DelegationKey => "get a user delegation key",
        }
    }

    pub fn service(self) -> Service {
        match self {
            Right::CreateQueues
            | Right::SendMessages
            | Right::ReceiveMessages
            | Right::DeleteMessages
            | Right::UpdateMessages => Service::Queue,
            _ => Service::Blob,
        }
    }

    /// What an account SAS must sign for it: the resource type (`c` container, `o` object) and
    /// the permissions any one of which grants it ("Create an account SAS").
    pub(super) fn account_sas_rule(self) -> Option<(char, &'static str)> {
        Some(match self {
            Right::CreateContainers | Right::CreateQueues => ('c', "cw"),
            Right::ListBlobs => ('c', "l"),
            Right::ReadBlobs => ('o', "r"),
            Right::WriteBlobs | Right::Lease => ('o', "w"),
            Right::Snapshot => ('o', "cw"),
            Right::DeleteBlobs => ('o', "d"),
            Right::ReadTags | Right::WriteTags => ('o', "t"),
            Right::SendMessages => ('o', "a"),
            Right::ReceiveMessages | Right::DeleteMessages => ('o', "p"),
            Right::UpdateMessages => ('o', "u"),
            // Asked for with a token, never with a SAS.
            Right::DelegationKey => return None,
        })
    }

    /// The permissions a service SAS (blob, container or queue) grants it with; `None` where
    /// only an account SAS can (creating a container or a queue).
    pub(super) fn service_sas_permissions(self) -> Option<&'static str> {
        match self {
            Right::CreateContainers | Right::CreateQueues | Right::DelegationKey => None,
            _ => self.account_sas_rule().map(|(_, permissions)| permissions),
        }
    }
}
