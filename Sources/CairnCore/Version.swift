/// This build's version, in one place: `cairn version`, `cairn --version`, the
/// `cairn_build_info` metric and the dashboard read it.
public enum CairnVersion {
  public static let current = "0.8.0"
}
