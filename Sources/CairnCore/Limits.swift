/// Every limit Cairn enforces, by name. Exceeding one is an error that names it.
public struct Limits: Sendable, Hashable {
  /// Largest gRPC message a node accepts or sends (containerd's clients use 16 MiB).
  public var maxMessageBytes: Int = 16 << 20 + 64 << 10
  /// Bytes of blob data per Read response message.
  public var readChunkBytes: Int = 1 << 20
  /// Longest ref accepted by Write/Status/Abort.
  public var maxRefBytes: Int = 4096
  /// containerd's rule: a label's key plus value may not exceed 4096 bytes.
  public var maxLabelBytes: Int = 4096
  /// Labels per blob.
  public var maxLabelsPerBlob: Int = 256
  /// Filters per List/ListStatuses request, and bytes per filter string.
  public var maxFilters: Int = 64
  public var maxFilterBytes: Int = 4096
  /// Steps (Pike VM threads) all the regular expressions of one List or ListStatuses may
  /// take; past it the call is DEADLINE_EXCEEDED. About a second of one core at worst.
  public var maxFilterWork: Int = 50_000_000
  /// Ingests that may be open for writing at once on one node.
  public var maxActiveIngests: Int = 4096
  /// Refs one seed Status watch may follow.
  public var maxWatchedRefs: Int = 4096
  /// Largest blob a Write may build (default 1 TiB).
  public var maxBlobBytes: Int64 = 1 << 40
  /// How long a second writer waits for a ref's lock to be released before it gets
  /// UNAVAILABLE. containerd's client closes a stream and immediately reopens the ref, and
  /// the server sees the close a moment later; containerd's own store retries for the
  /// same reason.
  public var lockWaitSeconds: Double = 0.5
  /// How long a writer that names the digest it will write (containerd's pulls do) waits
  /// for another writer of the same ref to finish: when that one commits, the waiter gets
  /// ALREADY_EXISTS at once, instead of a storm of UNAVAILABLE retries (containerd issues
  /// #6702, #8790). Writers without an expected digest wait lockWaitSeconds.
  public var commitWaitSeconds: Double = 30
  /// Clients (ScopedStore) that may hold one blob at once.
  public var maxHoldersPerBlob: Int = 4096
  /// A blob's stored metadata (labels, holds, client-scoped labels; JSON), at most: every
  /// update and commit that would pass it is INVALID_ARGUMENT, so metadata always reads
  /// back. 4096 holds take about 0.5 MiB of it.
  public var maxMetadataBytes: Int = 4 << 20
  /// How long an Update waits for another Update of the same blob's labels to finish.
  public var metadataLockWaitSeconds: Double = 30
  /// Blob infos per List response message (a few hundred bytes each: far below
  /// maxMessageBytes).
  public var listBatchSize: Int = 100
  /// ... and label bytes per List response message, about (one blob's labels may take
  /// maxMetadataBytes; a message must stay far below maxMessageBytes).
  public var listBatchBytes: Int = 4 << 20
  /// Concurrent HTTP/2 streams per client connection.
  public var maxConcurrentStreams: Int = 1024

  /// Closest spacing of client HTTP/2 pings the server tolerates (closer ones are strikes;
  /// a few strikes close the connection).
  public var minClientPingIntervalMilliseconds: Int64 = 1

  /// Client HTTP/2 PINGs per second the server answers before NIOHTTP2 sees them (see
  /// HTTP2ConnectionGuard). grpc-go pings once per round trip while data flows, which on
  /// loopback is thousands per second; a client past this limit meets NIOHTTP2's own guard
  /// (200 per 30 s) and loses its connection.
  public var maxAbsorbedPingsPerSecond: Int = 50_000

  /// Largest blob whose concurrent remote reads on one node share a single in-memory
  /// fetch (bigger blobs stream per reader), and the memory all such fetches may hold.
  public var maxCoalescedFetchBytes: Int64 = 512 << 20
  public var coalescedFetchBudgetBytes: Int64 = 1 << 30

  /// Memory all forwarded uploads on one node may hold to move to a ref's next owner when
  /// the owner dies (each keeps its last `ingest_mirror_lag` + one message of bytes); an
  /// upload that finds it spent keeps none, and fails as before if its owner dies.
  public var failoverTailBudgetBytes: Int64 = 256 << 20

  /// Fraction of the data directory's filesystem that may be in use before new uploads
  /// and appends get RESOURCE_EXHAUSTED (naming this limit); commits of data already
  /// written still go through, and a stopped upload resumes once space returns. 1 means
  /// only a full disk (ENOSPC, also RESOURCE_EXHAUSTED) stops them.
  public var diskHighWatermark: Double = 0.95

  public init() {}

  /// How long openWriter waits for a held ref (see commitWaitSeconds).
  public func lockWait(expecting expected: Digest?) -> Double {
    expected == nil ? lockWaitSeconds : max(lockWaitSeconds, commitWaitSeconds)
  }

  public static let `default` = Limits()
}
