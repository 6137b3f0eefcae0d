# Runs one compile-fail case; called by CTest as
#   cmake -DCOMPILER=<c++> -DSOURCE=<case.cpp> -DMODE=ok|ko -DFLAGS=<a|b|c> -P check.cmake
# ok: the case must compile. ko: with -DQFLASH_SHOULD_FAIL it must fail, and the compiler output
# must match the case's `// expect: <regex>` line, so it fails for the intended reason.
cmake_minimum_required(VERSION 3.25)
foreach(var COMPILER SOURCE MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check.cmake: ${var} is not set")
  endif()
endforeach()

file(STRINGS "${SOURCE}" expect_line REGEX "^// expect: " LIMIT_COUNT 1)
string(REGEX REPLACE "^// expect: " "" expect "${expect_line}")
if(expect STREQUAL "")
  message(FATAL_ERROR "${SOURCE}: no `// expect: <regex>` line")
endif()

string(REPLACE "|" ";" flags "${FLAGS}")
if(MODE STREQUAL "ko")
  list(APPEND flags -DQFLASH_SHOULD_FAIL)
endif()
set(ENV{LC_ALL} C)  # plain ASCII quotes in diagnostics
execute_process(COMMAND "${COMPILER}" ${flags} -fsyntax-only "${SOURCE}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)

if(MODE STREQUAL "ok")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the ok variant does not compile:\n${out}")
  endif()
  message(STATUS "ok variant compiles")
elseif(MODE STREQUAL "ko")
  if(rc EQUAL 0)
    message(FATAL_ERROR "compiled with QFLASH_SHOULD_FAIL, but it must not: the constraint is gone")
  endif()
  if(NOT out MATCHES "${expect}")
    message(FATAL_ERROR "failed to compile, but without the expected message /${expect}/:\n${out}")
  endif()
  # Show the first line that matches on its own (the regex may also span lines).
  string(REPLACE ";" "," lines "${out}")
  string(REPLACE "\n" ";" lines "${lines}")
  set(shown "(match spans lines)")
  foreach(line IN LISTS lines)
    if(line MATCHES "${expect}")
      set(shown "${line}")
      break()
    endif()
  endforeach()
  message(STATUS "rejected as expected: ${shown}")
else()
  message(FATAL_ERROR "check.cmake: MODE must be ok or ko, not '${MODE}'")
endif()
