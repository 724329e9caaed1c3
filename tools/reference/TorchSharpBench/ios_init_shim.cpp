// GCC 13's <iostream> references std::ios_base_library_init (GLIBCXX_3.4.32) to pull in a libstdc++ that
// initialises the standard streams itself; Debian 12's libstdc++ (GCC 12) predates it and initialises them
// through ios_base::Init objects. This defines the symbol under that version and does the same work.
#include <ios>
namespace std { void ios_base_library_init() { static ios_base::Init init; } }
