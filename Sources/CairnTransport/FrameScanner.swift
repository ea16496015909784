import NIOCore

/// An HTTP/2 frame header.
public struct FrameHeader: Sendable, Equatable {
  public enum Kind: UInt8, Sendable {
    case data = 0x0, headers = 0x1, priority = 0x2, rstStream = 0x3, settings = 0x4, pushPromise = 0x5
    case ping = 0x6, goAway = 0x7, windowUpdate = 0x8, continuation = 0x9, unknown = 0xff
  }

  public var length: Int
  public var type: Kind
  public var flags: UInt8
  public var streamID: UInt32

  /// END_STREAM on DATA and HEADERS; ACK on PING and SETTINGS (the same bit).
  public var endStream: Bool { flags & 0x1 != 0 }
  public var ack: Bool { flags & 0x1 != 0 }

  init(_ b: [UInt8]) {
    length = Int(b[0]) << 16 | Int(b[1]) << 8 | Int(b[2])
    type = Kind(rawValue: b[3]) ?? .unknown
    flags = b[4]
    streamID = (UInt32(b[5]) << 24 | UInt32(b[6]) << 16 | UInt32(b[7]) << 8 | UInt32(b[8])) & 0x7fff_ffff
  }
}

/// Follows frame boundaries in an HTTP/2 byte stream without copying it: it reads only
/// headers (a header split across buffers is the one thing held back, at most 9 bytes)
/// and the bodies the caller asks to keep. For each frame the caller decides, from the
/// header alone, whether its bytes go on, are dropped, or are replaced; everything that
/// goes on is handed out as slices of the input buffers.
struct FrameScanner {
  enum Disposition: Equatable {
    case forward
    case drop
    case replace([UInt8])
  }

  private var prefaceLeft: Int
  private var partialHeader: [UInt8] = []
  private var current: FrameHeader?
  private var forwarding = true
  private var keeping = false
  private var bodyLeft = 0
  private var body: [UInt8] = []

  /// `preface`: bytes before the first frame (24 for what a client sends).
  init(preface: Int) { prefaceLeft = preface }

  /// Scans `input`. `decide` sees each header and says what happens to the frame's bytes
  /// and whether its body should be kept; `kept` receives kept bodies once complete;
  /// `emit` receives the bytes to pass on, in order.
  mutating func scan(
    _ input: ByteBuffer,
    decide: (FrameHeader) -> (Disposition, keepBody: Bool),
    kept: (FrameHeader, [UInt8]) -> Void = { _, _ in },
    emit: (ByteBuffer) -> Void
  ) {
    var runStart: Int?
    var index = input.readerIndex
    let end = input.writerIndex
    func extendRun() { if runStart == nil { runStart = index } }
    func flushRun() {
      if let start = runStart, index > start { emit(input.getSlice(at: start, length: index - start)!) }
      runStart = nil
    }

    while index < end {
      if prefaceLeft > 0 {
        let n = min(prefaceLeft, end - index)
        extendRun()
        index += n
        prefaceLeft -= n
        continue
      }
      if let header = current {
        let n = min(bodyLeft, end - index)
        if forwarding { extendRun() } else { flushRun() }
        if keeping { body += input.getBytes(at: index, length: n)! }
        index += n
        bodyLeft -= n
        if bodyLeft == 0 { finishFrame(header, kept: kept) }
        continue
      }
      // At a frame boundary: gather the 9-byte header.
      let need = 9 - partialHeader.count
      if end - index < need {
        flushRun()
        partialHeader += input.getBytes(at: index, length: end - index)!
        index = end
        break
      }
      let headerStart = index
      let bytes = partialHeader + input.getBytes(at: index, length: need)!
      let heldBack = partialHeader
      partialHeader = []
      let header = FrameHeader(bytes)
      let (disposition, keep) = decide(header)
      switch disposition {
      case .forward:
        if !heldBack.isEmpty {
          flushRun()
          var b = ByteBuffer()
          b.writeBytes(heldBack)
          emit(b)
        }
        if runStart == nil { runStart = headerStart }
        forwarding = true
      case .drop:
        flushRun()
        forwarding = false
      case .replace(let replacement):
        flushRun()
        var b = ByteBuffer()
        b.writeBytes(replacement)
        emit(b)
        forwarding = false
      }
      index += need
      current = header
      keeping = keep
      bodyLeft = header.length
      body = []
      if bodyLeft == 0 { finishFrame(header, kept: kept) }
    }
    flushRun()
  }

  private mutating func finishFrame(_ header: FrameHeader, kept: (FrameHeader, [UInt8]) -> Void) {
    if keeping { kept(header, body) }
    current = nil
    keeping = false
    body = []
  }
}
