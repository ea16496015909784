import CairnCore
import Foundation
import Testing

@Suite struct ByteSizeTests {
  @Test func parsesWhatPeopleWrite() {
    let cases: [(String, Int64?)] = [
      ("0", 0), ("1048576", 1_048_576), ("64k", 65536), ("64K", 65536), ("64KiB", 65536), ("64 KiB", 65536),
      ("16MiB", 16 << 20), ("1g", 1 << 30), ("1GiB", 1 << 30), ("1TiB", 1 << 40), ("1t", 1 << 40),
      ("1kB", 1000), ("100MB", 100_000_000), ("1GB", 1_000_000_000), ("1TB", 1_000_000_000_000), ("512b", 512),
      ("1.5GiB", 3 << 29), ("0.5k", 512),
      ("", nil), ("-1", nil), ("-1k", nil), ("1 parsec", nil), ("GiB", nil), ("1e9", nil), ("nan", nil), ("inf", nil),
      ("1.2.3k", nil), ("1iB", nil),
      // Too large for an Int64: an error, never a trap.
      ("9223372036854775807", .max), ("9223372036854775807k", nil), ("99999999999TiB", nil), ("9999999999999999999999", nil),
      ("8388608TiB", nil), ("8388607TiB", 8_388_607 << 40),
    ]
    for (text, expected) in cases {
      #expect(ByteSize.parse(text) == expected, "\(text)")
    }
  }

  @Test func formatsForPeople() {
    #expect(ByteSize.format(0) == "0 B")
    #expect(ByteSize.format(1023) == "1023 B")
    #expect(ByteSize.format(1024) == "1.0 KiB")
    #expect(ByteSize.format(3 << 29) == "1.5 GiB")
    #expect(ByteSize.format(1 << 40) == "1.0 TiB")
    #expect(ByteSize.format(.max) == "8192.0 PiB")
    // What format prints, parse reads back (to a tenth of the unit).
    for n: Int64 in [1, 1000, 65536, 3 << 29, 1 << 40] {
      let back = ByteSize.parse(ByteSize.format(n).replacingOccurrences(of: " ", with: ""))
      #expect(back.map { abs($0 - n) <= max(1, n / 10) } == true, "\(n)")
    }
  }
}
