namespace ViTQuant;

/// <summary>
/// A failure caused by the user's input (a missing or corrupt file, a wrong shape, an impossible
/// setting). The CLI prints its message as one line and exits non-zero; other exceptions are bugs.
/// </summary>
public class ViTQuantException : Exception
{
    /// <summary>A failure described by <paramref name="message"/> (one line, naming the file or setting).</summary>
    public ViTQuantException(string message) : base(message) { }
    /// <summary>A failure described by <paramref name="message"/>, caused by <paramref name="inner"/>.</summary>
    public ViTQuantException(string message, Exception inner) : base(message, inner) { }
}
