# Checks that README.md shows examples/readme_usage.cpp verbatim (CTest: docs.readme_usage_in_sync).
#   cmake -DREADME=<README.md> -DSOURCE=<readme_usage.cpp> -P readme_sync.cmake
# The block checked is the first fenced C++ block (```cpp) after the line
# `<!-- readme_usage.cpp -->`, with only blank space between the marker and the fence. Fails,
# naming the first differing line, when the block is missing or differs from the file.
cmake_minimum_required(VERSION 3.19)

if(NOT README OR NOT SOURCE)
  message(FATAL_ERROR "readme_sync.cmake needs -DREADME=<README.md> and -DSOURCE=<file>")
endif()
file(READ "${README}" readme)
file(READ "${SOURCE}" source)

set(marker "<!-- readme_usage.cpp -->")
string(FIND "${readme}" "${marker}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${README}: no '${marker}' line; put it right above the usage block")
endif()
string(LENGTH "${marker}" marker_length)
math(EXPR at "${at} + ${marker_length}")
string(SUBSTRING "${readme}" ${at} -1 rest)
string(REGEX MATCH "^[ \t\r\n]*```(cpp|c\\+\\+)[ \t]*\n" fence "${rest}")
if(fence STREQUAL "")
  message(FATAL_ERROR "${README}: '${marker}' is not followed by a ```cpp fenced block")
endif()
string(LENGTH "${fence}" fence_length)
string(SUBSTRING "${rest}" ${fence_length} -1 rest)
if(rest MATCHES "^```")
  set(block "")
else()
  string(FIND "${rest}" "\n```" end)
  if(end EQUAL -1)
    message(FATAL_ERROR "${README}: the usage block after '${marker}' is never closed")
  endif()
  math(EXPR end "${end} + 1")  # keep the block's last newline
  string(SUBSTRING "${rest}" 0 ${end} block)
endif()

if(block STREQUAL source)
  message(STATUS "README.md shows ${SOURCE} verbatim")
  return()
endif()

# Name the first line that differs. Lines are cut with string(FIND), not lists: C++ has ';'.
set(line 1)
while(TRUE)
  string(FIND "${block}" "\n" block_end)
  string(FIND "${source}" "\n" source_end)
  string(SUBSTRING "${block}" 0 ${block_end} block_line)
  string(SUBSTRING "${source}" 0 ${source_end} source_line)
  if(NOT block_line STREQUAL source_line OR block_end EQUAL -1 OR source_end EQUAL -1)
    break()
  endif()
  math(EXPR block_end "${block_end} + 1")
  math(EXPR source_end "${source_end} + 1")
  string(SUBSTRING "${block}" ${block_end} -1 block)
  string(SUBSTRING "${source}" ${source_end} -1 source)
  math(EXPR line "${line} + 1")
endwhile()
message(FATAL_ERROR
  "README.md's usage block differs from ${SOURCE} at line ${line} of the block:\n"
  "  README: ${block_line}\n"
  "  file:   ${source_line}\n"
  "Copy the file into the block (or the block into the file) so that both agree.")
