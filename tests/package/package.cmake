# Packaging test driver, called by CTest (see CMakeLists.txt here):
#   cmake -DSTEP=install  -DSOURCE_DIR=<qflash> -DBINARY_DIR=<dir> -DPREFIX=<prefix> [common] -P package.cmake
#   cmake -DSTEP=consumer -DSOURCE_DIR=<consumer project> -DBINARY_DIR=<dir> -DCONSUMER_ARGS=<a|b> [common] -P package.cmake
# common: -DGENERATOR=<generator> -DCXX_COMPILER=<c++> [-DCUDA_COMPILER=<nvcc> -DCUDA_ARCH=<arch>]
# install: configure qflash alone (no tests, examples or CUDA), build, install into PREFIX, check
# the layout. consumer: configure + build the consumer project from scratch, run consumer_host,
# and run consumer_cuda if it was built (exit 77, no GPU, counts as "built, not run").
cmake_minimum_required(VERSION 3.25)

function(run what)
  message(STATUS "package: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc COMMAND_ECHO STDOUT)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package: ${what} failed (${rc})")
  endif()
endfunction()

set(configure_args -G "${GENERATOR}" -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
if(CUDA_COMPILER)
  list(APPEND configure_args -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER}
                             -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH} -DCONSUMER_WITH_CUDA=ON)
else()
  list(APPEND configure_args -DCONSUMER_WITH_CUDA=OFF)
endif()
file(REMOVE_RECURSE "${BINARY_DIR}")

if(STEP STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}")
  run("configure qflash" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR} ${configure_args}
      -DQFLASH_BUILD_TESTS=OFF -DQFLASH_BUILD_EXAMPLES=OFF -DQFLASH_BUILD_BENCH=OFF
      -DQFLASH_ENABLE_CUDA=OFF -DQFLASH_INSTALL=ON -DCMAKE_INSTALL_PREFIX=${PREFIX})
  run("build qflash" ${CMAKE_COMMAND} --build ${BINARY_DIR})
  run("install qflash" ${CMAKE_COMMAND} --install ${BINARY_DIR})
  foreach(f include/qflash/qflash.hpp include/qflash/version.hpp
            include/qflash/reference/flash_attention_int.hpp
            share/cmake/qflash/qflashConfig.cmake share/cmake/qflash/qflashConfigVersion.cmake
            share/cmake/qflash/qflashTargets.cmake)
    if(NOT EXISTS "${PREFIX}/${f}")
      message(FATAL_ERROR "package: ${f} is missing from the install")
    endif()
  endforeach()
  message(STATUS "package: installed into ${PREFIX}")
elseif(STEP STREQUAL "consumer")
  string(REPLACE "|" ";" consumer_args "${CONSUMER_ARGS}")
  run("configure ${SOURCE_DIR}" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR}
      ${configure_args} ${consumer_args})
  run("build consumer" ${CMAKE_COMMAND} --build ${BINARY_DIR} --parallel 2)
  run("run consumer_host" ${BINARY_DIR}/consumer_host)
  if(EXISTS ${BINARY_DIR}/consumer_cuda)
    message(STATUS "package: run consumer_cuda")
    execute_process(COMMAND ${BINARY_DIR}/consumer_cuda RESULT_VARIABLE rc)
    if(rc EQUAL 77)
      message(STATUS "package: consumer_cuda built; not run (no GPU)")
    elseif(NOT rc EQUAL 0)
      message(FATAL_ERROR "package: consumer_cuda failed (${rc})")
    endif()
  elseif(CUDA_COMPILER)
    message(FATAL_ERROR "package: consumer_cuda was not built")
  endif()
else()
  message(FATAL_ERROR "package.cmake: STEP must be install or consumer, not '${STEP}'")
endif()
