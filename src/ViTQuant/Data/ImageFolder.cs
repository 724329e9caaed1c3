// A dataset of image files on disk, in torchvision's ImageFolder layout or listed in a labels file.
//
// Directory layout (ImageNet style):  root/<class>/**/*.jpg|jpeg|png
//   classes  = with a model's class names: those names, each sub-directory labelled by the class whose
//              normalised name it has (or by index when it is a number), so the folder order cannot
//              silently permute labels; without names: the sub-directory names of root, sorted by
//              ordinal string order (Python's sorted());
//   images   = every file below a class directory, walked recursively, sorted by (directory, file
//              name) ordinally as sorted(os.walk(...)) + sorted(fnames) do, so index i names the
//              same file as torchvision's ImageFolder on the same tree.
// Labels file: one "path<TAB>label" per line ('#' comments and blank lines skipped); a relative path
//   is taken from the labels file's directory (or an explicit root). The label is a class index or
//   a class name. Without explicit class names, integer labels give NumClasses = max + 1 and names
//   "0", "1", …; otherwise the sorted distinct label strings are the classes.
// Images are decoded lazily, one per GetImage call, and passed through the EvalTransform.
using ViTQuant.IO;

namespace ViTQuant.Data;

/// <summary>Labelled image files read on demand through an <see cref="EvalTransform"/>.</summary>
internal sealed class ImageFolder : IImageDataset
{
    private static readonly string[] _decodable = { ".jpg", ".jpeg", ".png" };
    private static readonly string[] _otherImages = { ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif" };

    private readonly string[] _paths;
    private readonly int[] _labels;
    private readonly string[] _classNames;

    /// <summary>The transform every image goes through.</summary>
    public EvalTransform Transform { get; }

    /// <inheritdoc/>
    public int Count => _paths.Length;
    /// <inheritdoc/>
    public int Channels => Transform.Channels;
    /// <inheritdoc/>
    public int Height => Transform.Size;
    /// <inheritdoc/>
    public int Width => Transform.Size;
    /// <inheritdoc/>
    public int NumClasses => _classNames.Length;
    /// <inheritdoc/>
    public IReadOnlyList<string> ClassNames => _classNames;

    private ImageFolder(string[] paths, int[] labels, string[] classNames, EvalTransform transform)
    {
        _paths = paths; _labels = labels; _classNames = classNames; Transform = transform;
    }

    /// <summary>File path of image <paramref name="index"/>.</summary>
    public string ImagePath(int index) => (uint)index < (uint)_paths.Length ? _paths[index]
        : throw new ArgumentOutOfRangeException(nameof(index), $"image index {index} out of range for {_paths.Length} images");

    /// <inheritdoc/>
    public int Label(int index) => (uint)index < (uint)_labels.Length ? _labels[index]
        : throw new ArgumentOutOfRangeException(nameof(index), $"image index {index} out of range for {_labels.Length} images");

    /// <summary>Decodes, resizes and crops image <paramref name="index"/>; throws ViTQuantException naming the file if it cannot be decoded.</summary>
    public void GetImage(int index, Span<float> dst)
    {
        this.CheckGetImage(index, dst.Length);
        Transform.Apply(ImageDecoder.Decode(_paths[index]), dst);
    }

    /// <summary>
    /// Scans root/&lt;class&gt;/** for .jpg/.jpeg/.png files (see the file header for the order); the classes
    /// are the sub-directory names in sorted order (use the overload with class names for a model that has them).
    /// Throws ViTQuantException when root is missing, has no class directories, a class directory
    /// holds no images, or holds image files of a format that cannot be decoded (bmp, tiff, webp…).
    /// </summary>
    public static ImageFolder FromDirectory(string root, EvalTransform transform) => FromDirectory(root, transform, null);

    /// <summary>
    /// As <see cref="FromDirectory(string, EvalTransform)"/>, but with <paramref name="classNames"/> (a model's
    /// classes) each sub-directory is labelled by name, not by sort order: it maps to the class whose
    /// <see cref="NormalizeClassName">normalised</see> name equals its own, else, when its name is a number, to
    /// that class index. The dataset's classes are then <paramref name="classNames"/>. Throws ViTQuantException
    /// listing the sub-directories that match no class (and the class names), or when two class names normalise
    /// to the same key that a sub-directory uses.
    /// </summary>
    public static ImageFolder FromDirectory(string root, EvalTransform transform, IReadOnlyList<string>? classNames)
    {
        ArgumentNullException.ThrowIfNull(transform);
        if (!Directory.Exists(root)) throw new ViTQuantException($"image folder {root} does not exist");
        var classes = Directory.GetDirectories(root).Select(Path.GetFileName).Select(n => n!).ToArray();
        Array.Sort(classes, StringComparer.Ordinal);
        if (classes.Length == 0) throw new ViTQuantException($"image folder {root} has no class sub-directories (expected root/<class>/<image>)");
        int[] folderLabel = classNames == null ? Enumerable.Range(0, classes.Length).ToArray() : MapFolders(root, classes, classNames);
        string[] names = classNames?.ToArray() ?? classes;
        var paths = new List<string>();
        var labels = new List<int>();
        for (int c = 0; c < classes.Length; c++)
        {
            string dir = Path.Combine(root, classes[c]);
            var files = Directory.EnumerateFiles(dir, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
                .Select(p => (Dir: Path.GetDirectoryName(p)!, Name: Path.GetFileName(p)))
                .ToList();
            files.Sort((a, b) =>
            {
                int d = string.CompareOrdinal(a.Dir, b.Dir);
                return d != 0 ? d : string.CompareOrdinal(a.Name, b.Name);
            });
            int before = paths.Count;
            foreach (var (d, name) in files)
            {
                string ext = Path.GetExtension(name).ToLowerInvariant();
                string full = Path.Combine(d, name);
                if (Array.IndexOf(_otherImages, ext) >= 0)
                    throw new ViTQuantException($"{full}: {ext} images are not supported (only JPEG and PNG); convert or remove it");
                if (Array.IndexOf(_decodable, ext) < 0) continue;
                paths.Add(full);
                labels.Add(folderLabel[c]);
            }
            if (paths.Count == before) throw new ViTQuantException($"class directory {dir} contains no .jpg/.jpeg/.png images");
        }
        return new ImageFolder(paths.ToArray(), labels.ToArray(), names, transform);
    }

    /// <summary>
    /// The key class names and folder names are compared by: lower case, every run of characters that are
    /// not letters or digits read as one '_', none at either end ("T-shirt/top", "t_shirt_top" and
    /// "T-shirt top" all give "t_shirt_top").
    /// </summary>
    public static string NormalizeClassName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var b = new System.Text.StringBuilder(name.Length);
        bool gap = false;
        foreach (char ch in name.Trim())
        {
            if (char.IsLetterOrDigit(ch))
            {
                if (gap && b.Length > 0) b.Append('_');
                b.Append(char.ToLowerInvariant(ch));
                gap = false;
            }
            else gap = true;
        }
        return b.ToString();
    }

    /// <summary>The class index of each sub-directory (see the class-name overload of FromDirectory).</summary>
    private static int[] MapFolders(string root, string[] folders, IReadOnlyList<string> classNames)
    {
        if (classNames.Count == 0) throw new ArgumentException("class name list is empty", nameof(classNames));
        var byKey = new Dictionary<string, int>(StringComparer.Ordinal);
        var ambiguous = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < classNames.Count; i++)
            if (!byKey.TryAdd(NormalizeClassName(classNames[i]), i)) ambiguous.Add(NormalizeClassName(classNames[i]));
        var map = new int[folders.Length];
        var unmatched = new List<string>();
        for (int f = 0; f < folders.Length; f++)
        {
            string key = NormalizeClassName(folders[f]);
            if (ambiguous.Contains(key))
                throw new ViTQuantException($"image folder {root}: sub-folder '{folders[f]}' matches several class names ({string.Join(", ", classNames.Where(n => NormalizeClassName(n) == key).Select(n => $"'{n}'"))})");
            if (byKey.TryGetValue(key, out int k)) map[f] = k;
            else if (folders[f].All(char.IsAsciiDigit) && int.TryParse(folders[f], out k) && k < classNames.Count) map[f] = k;
            else { map[f] = -1; unmatched.Add(folders[f]); }
        }
        if (unmatched.Count > 0)
            throw new ViTQuantException($"image folder {root}: sub-folder{(unmatched.Count > 1 ? "s" : "")} {string.Join(", ", unmatched.Select(u => $"'{u}'"))} "
                + $"match{(unmatched.Count > 1 ? "" : "es")} none of the model's {classNames.Count} classes ({string.Join(", ", classNames.Select(n => $"'{n}'"))}) "
                + "by name or index; rename the folder or give --labels FILE (one class name a line)");
        return map;
    }

    /// <summary>
    /// Reads a labels file of "path&lt;TAB&gt;label" lines. With <paramref name="classNames"/>, a label
    /// is an index below its count or one of its names. Relative paths are resolved against
    /// <paramref name="root"/>, else the labels file's directory. Throws ViTQuantException (with file
    /// and line number) for a missing labels file, a malformed line, an unknown or out-of-range
    /// label, a listed image that does not exist, or a file that lists no images.
    /// </summary>
    public static ImageFolder FromLabelsFile(string labelsFile, EvalTransform transform, IReadOnlyList<string>? classNames = null, string? root = null)
    {
        ArgumentNullException.ThrowIfNull(transform);
        if (!File.Exists(labelsFile)) throw new ViTQuantException($"labels file {labelsFile} not found");
        root ??= Path.GetDirectoryName(Path.GetFullPath(labelsFile))!;
        var entries = new List<(string Path, string Label, int Line)>();
        int lineNo = 0;
        foreach (var raw in File.ReadLines(labelsFile))
        {
            lineNo++;
            var line = raw.TrimEnd('\r');
            if (line.Trim().Length == 0 || line.TrimStart().StartsWith('#')) continue;
            int tab = line.LastIndexOf('\t');
            if (tab <= 0 || tab == line.Length - 1) throw new ViTQuantException($"{labelsFile}:{lineNo}: expected 'path<TAB>label', got '{Truncate(line)}'");
            string path = line[..tab], label = line[(tab + 1)..].Trim();
            string full = Path.IsPathRooted(path) ? path : Path.Combine(root, path);
            if (!File.Exists(full)) throw new ViTQuantException($"{labelsFile}:{lineNo}: image {full} not found");
            entries.Add((full, label, lineNo));
        }
        if (entries.Count == 0) throw new ViTQuantException($"labels file {labelsFile} lists no images");

        string[] names;
        Func<string, int, int> resolve;
        if (classNames != null)
        {
            if (classNames.Count == 0) throw new ArgumentException("class name list is empty");
            names = classNames.ToArray();
            var byName = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < names.Length; i++) byName.TryAdd(names[i], i);
            resolve = (l, ln) => byName.TryGetValue(l, out int k) ? k
                : int.TryParse(l, out k) && k >= 0 && k < names.Length ? k
                : throw new ViTQuantException($"{labelsFile}:{ln}: label '{l}' is neither a class name nor an index below {names.Length}");
        }
        else if (entries.All(e => int.TryParse(e.Label, out _)))
        {
            int max = -1;
            foreach (var e in entries)
            {
                int k = int.Parse(e.Label);
                if (k < 0) throw new ViTQuantException($"{labelsFile}:{e.Line}: negative label {k}");
                max = Math.Max(max, k);
            }
            names = Enumerable.Range(0, max + 1).Select(i => i.ToString()).ToArray();
            resolve = (l, _) => int.Parse(l);
        }
        else
        {
            names = entries.Select(e => e.Label).Distinct().ToArray();
            Array.Sort(names, StringComparer.Ordinal);
            var byName = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < names.Length; i++) byName[names[i]] = i;
            resolve = (l, _) => byName[l];
        }
        var paths = new string[entries.Count];
        var labels = new int[entries.Count];
        for (int i = 0; i < entries.Count; i++)
        {
            paths[i] = entries[i].Path;
            labels[i] = resolve(entries[i].Label, entries[i].Line);
        }
        return new ImageFolder(paths, labels, names, transform);
    }

    private static string Truncate(string s) => s.Length <= 80 ? s : s[..77] + "...";
}
