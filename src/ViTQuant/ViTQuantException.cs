namespace ViTQuant;

/// <summary>
/// A failure caused by the user's input (a missing or corrupt file, a wrong shape, an impossible
/// setting). The CLI prints its message as one line and exits non-zero; other exceptions are bugs.
/// </summary>
public class ViTQuantException : Exception
{
    public ViTQuantException(string message) : base(message) { }
    public ViTQuantException(string message, Exception inner) : base(message, inner) { }
}
